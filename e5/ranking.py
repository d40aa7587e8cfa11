"""Ranking documents against queries in one call: cosine scores, and per query the documents best first."""

from __future__ import annotations

import numpy as np

from .encodings import FLOAT_DECIMALS


def cosine_scores(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """(Q, C), (D, C) -> (Q, D) cosine similarity, whether or not the vectors were normalized."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    d = documents / np.maximum(np.linalg.norm(documents, axis=1, keepdims=True), 1e-12)
    return q @ d.T


def rank(scores: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """Document indices per query, best first; a stable sort keeps ties in document order."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return order if top_k is None else order[:, :top_k]


def round_scores(scores: np.ndarray) -> np.ndarray:
    """Scores rounded like the vectors (8 decimals). In float64 first: a float32 rounded stays a float32, and its
    JSON repr (0.9618099927902222) shows digits the rounding meant to drop."""
    return np.round(scores.astype(np.float64), FLOAT_DECIMALS)


def ranking(scores: np.ndarray, top_k: int | None = None) -> list[list[dict]]:
    """Per query, its documents best first (top_k of them): {"index": document index, "score": cosine}."""
    order = rank(scores, top_k)
    best = np.take_along_axis(round_scores(scores), order, axis=1)
    return [[{"index": i, "score": s} for i, s in zip(indices, values)]
            for indices, values in zip(order.tolist(), best.tolist())]
