"""What each compact encoding costs in ranking quality: top-10 overlap with float32 search.

    python scripts/encoding_quality.py [--weights DIR] [--docs 2000] [--queries 200]

Embeds a corpus as documents and a set of queries, ranks the corpus for each query with float32 cosine,
then with each encoding (int8 dot product, binary Hamming distance, base64 decoded), and reports the mean
share of the float32 top-10 that each encoding's top-10 keeps. Without real weights in weights/ it uses the
2-layer generated test checkpoint (random weights): the figures then speak for the encodings' arithmetic on
such vectors, not for the trained model.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchmark import mixed_corpus  # noqa: E402
from e5 import Embedder, format_query  # noqa: E402
from e5.encodings import decode_base64, encode_vectors  # noqa: E402
from synthetic_checkpoint import SEED_WORDS, write_checkpoint  # noqa: E402


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b)]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    weights = args.weights
    kind = "given checkpoint"
    if weights is None:
        if (ROOT / "weights" / "model.safetensors").is_file():
            weights, kind = ROOT / "weights", "real weights"
        else:
            weights, kind = Path.home() / ".cache" / "e5-cog" / "tiny", "2-layer generated test checkpoint (random weights)"
            if not (weights / "model.safetensors").is_file():
                write_checkpoint(weights)
    embedder = Embedder.load(weights, device="cpu")
    rng = random.Random(5)
    docs = mixed_corpus(args.docs, seed=11)
    queries = [format_query("Given a web search query, retrieve relevant passages that answer the query",
                            " ".join(rng.choice(SEED_WORDS) for _ in range(rng.randint(2, 10)))) for _ in range(args.queries)]
    d = embedder.embed_texts(docs)
    q = embedder.embed_texts(queries)
    reference = top_k(q @ d.T, args.k)

    results = {}
    b64 = lambda v: np.stack([decode_base64(s) for s in encode_vectors(v, "base64")])  # noqa: E731
    results["base64"] = overlap(reference, top_k(b64(q) @ b64(d).T, args.k))
    qi = np.array(encode_vectors(q, "int8"), dtype=np.int32)
    di = np.array(encode_vectors(d, "int8"), dtype=np.int32)
    results["int8"] = overlap(reference, top_k((qi @ di.T).astype(np.float64), args.k))
    qb = np.unpackbits(np.array(encode_vectors(q, "binary"), dtype=np.uint8), axis=1).astype(np.int32)
    db = np.unpackbits(np.array(encode_vectors(d, "binary"), dtype=np.uint8), axis=1).astype(np.int32)
    hamming = qb @ (1 - db).T + (1 - qb) @ db.T
    results["binary"] = overlap(reference, top_k(-hamming.astype(np.float64), args.k))
    sizes = {"float": "~20 KB as JSON text", "base64": "5,464 B", "int8": "~4 KB as JSON text", "binary": "~0.5 KB as JSON text"}
    print(f"checkpoint: {kind}; {args.docs} documents, {args.queries} queries; top-{args.k} overlap with float32:")
    for name, value in results.items():
        print(f"  {name:7s} {value:.3f}   (one vector: {sizes[name]})")
    print(json.dumps({"checkpoint": kind, "k": args.k, "overlap": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
