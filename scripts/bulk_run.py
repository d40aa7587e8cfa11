"""Time and memory of a bulk job: N short texts through `texts_file`, as the predictor serves it.

    python scripts/bulk_run.py [--texts 100000] [--weights DIR] [--format npy]

Uses the 2-layer generated test checkpoint unless --weights is given. Prints the wall time, texts/s,
the peak resident memory of the process, and that of the same predictor after a 10-text request (so the
difference is what the bulk job itself held). It also samples the resident memory during the job and
prints the highest sample in each quarter of it: bounded memory shows as flat quarters, a leak as a rise.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from synthetic_checkpoint import SEED_WORDS, write_checkpoint  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def quarter_peaks(samples: list[float]) -> list[float]:
    """The highest sample in each quarter of a series (each quarter holds at least one sample, if any)."""
    n = len(samples)
    return [max(samples[i * n // 4 : max((i + 1) * n // 4, i * n // 4 + 1)], default=0.0) for i in range(4)]


class RssSampler:
    """Resident memory every 0.2 s on a thread; Linux only (reads /proc)."""

    def __init__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.2):
            self.samples.append(current_rss_mb())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--format", default="npy", choices=["npy", "jsonl"])
    args = parser.parse_args(argv)
    weights = args.weights or Path.home() / ".cache" / "e5-cog" / "tiny"
    if not (weights / "model.safetensors").is_file():
        write_checkpoint(weights)

    import os

    os.environ["E5_WEIGHTS_DIR"] = str(weights)
    from predict import Predictor

    rng = random.Random(0)
    path = Path(tempfile.mkdtemp(prefix="e5-bulk-")) / "texts.txt"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(args.texts):
            f.write(" ".join(rng.choice(SEED_WORDS) for _ in range(rng.randint(2, 8))) + "\n")

    base = dict(task="Given a web search query, retrieve relevant passages that answer the query", input_type="document",
                normalize=True, truncate=True, documents=None, top_k=None, encoding_format="float")

    async def run():
        p = Predictor()
        await p.setup()
        await p.predict(texts=["warm up"] * 10, texts_file=None, output_file_format="npy", **base)
        before = rss_mb()
        start = time.perf_counter()
        with RssSampler() as sampler:
            out = await p.predict(texts=None, texts_file=path, output_file_format=args.format, **base)
        return out, before, time.perf_counter() - start, sampler

    out, before, seconds, sampler = asyncio.run(run())
    if args.format == "npy":
        shape = np.load(out.embeddings_file, mmap_mode="r").shape
    else:
        shape = (sum(1 for _ in open(out.embeddings_file)), 1024)
    print(f"bulk: {args.texts} texts ({sum(out.token_counts)} tokens) -> {out.embeddings_file.name} {shape} in {seconds:.1f}s "
          f"({args.texts / seconds:.0f} texts/s); peak RSS {rss_mb():.0f} MB (after a 10-text request: {before:.0f} MB); "
          f"output file {out.embeddings_file.stat().st_size / 1e6:.0f} MB")
    if sampler.samples:
        quarters = " / ".join(f"{q:.0f}" for q in quarter_peaks(sampler.samples))
        print(f"resident memory during the job, highest sample per quarter of it: {quarters} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
