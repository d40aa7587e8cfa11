"""Ranking documents against queries in one call: cosine scores and best-first indices."""

from __future__ import annotations

import numpy as np


def cosine_scores(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """(Q, C), (D, C) -> (Q, D) cosine similarity, whether or not the vectors were normalized."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    d = documents / np.maximum(np.linalg.norm(documents, axis=1, keepdims=True), 1e-12)
    return q @ d.T


def rank(scores: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """Document indices per query, best first; a stable sort keeps ties in document order."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return order if top_k is None else order[:, :top_k]
