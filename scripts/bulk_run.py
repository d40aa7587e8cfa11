"""Time and memory of a bulk job: N short texts through `texts_file`, as the predictor serves it.

    python scripts/bulk_run.py [--texts 100000] [--weights DIR] [--format npy] [--target-seconds S] [--json out.json]

Uses the 2-layer generated test checkpoint unless --weights is given. Prints the wall time, texts/s,
the peak resident memory of the process, and that of the same predictor after a 10-text request (so the
difference is what the bulk job itself held). It also samples the resident memory during the job and
prints the highest sample in each quarter of it: bounded memory shows as flat quarters, a leak as a rise.

--target-seconds: the job of --texts texts only calibrates; a second job, sized from its rate to take about
that long (at most --max-texts texts), is the run of record. For a machine whose speed is not known
beforehand (a GPU), where a fixed count would take either a second or ten minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


def sized_job(calibration_texts: int, calibration_seconds: float, target_seconds: float, max_texts: int) -> int:
    """Texts for a job of about `target_seconds` at the calibration job's rate: no fewer than it had, at most `max_texts`."""
    rate = calibration_texts / max(calibration_seconds, 1e-9)
    return max(calibration_texts, min(max_texts, round(rate * target_seconds)))


def write_texts(n: int, seed: int = 0) -> Path:
    """`n` short texts of the seed words, one per line, in a new temporary folder."""
    rng = random.Random(seed)
    path = Path(tempfile.mkdtemp(prefix="e5-bulk-")) / "texts.txt"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(" ".join(rng.choice(SEED_WORDS) for _ in range(rng.randint(2, 8))) + "\n")
    return path


BASE = dict(task="Given a web search query, retrieve relevant passages that answer the query", input_type="document",
            normalize=True, truncate=True, documents=None, top_k=None, encoding_format="float")


async def bulk_job(predictor, n: int, fmt: str) -> dict:
    """One `texts_file` request of `n` texts through predict(): time, resident memory, the output's shape."""
    path = write_texts(n)
    start = time.perf_counter()
    with RssSampler() as sampler:
        out = await predictor.predict(texts=None, texts_file=path, output_file_format=fmt, **BASE)
    seconds = time.perf_counter() - start
    if fmt == "npy":
        shape = np.load(out.embeddings_file, mmap_mode="r").shape
    else:
        shape = (sum(1 for _ in open(out.embeddings_file)), 1024)
    report = {"texts": n, "tokens": sum(out.token_counts), "seconds": seconds, "texts_per_s": n / seconds,
              "output_shape": list(shape), "output_mb": out.embeddings_file.stat().st_size / 1e6,
              "peak_rss_mb": rss_mb(), "rss_quarter_peaks_mb": quarter_peaks(sampler.samples) if sampler.samples else None}
    out.embeddings_file.unlink()  # a GPU run of a million texts writes gigabytes
    path.unlink()
    return report


def print_job(name: str, r: dict) -> None:
    print(f"{name}: {r['texts']} texts ({r['tokens']} tokens) -> {tuple(r['output_shape'])} in {r['seconds']:.1f}s "
          f"({r['texts_per_s']:.0f} texts/s); peak RSS {r['peak_rss_mb']:.0f} MB; output file {r['output_mb']:.0f} MB", flush=True)
    if r["rss_quarter_peaks_mb"]:
        quarters = " / ".join(f"{q:.0f}" for q in r["rss_quarter_peaks_mb"])
        print(f"resident memory during the job, highest sample per quarter of it: {quarters} MB", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--format", default="npy", choices=["npy", "jsonl"])
    parser.add_argument("--target-seconds", type=float, help="run a second job sized to take about this long")
    parser.add_argument("--max-texts", type=int, default=1_000_000, help="the sized job's cap (E5_MAX_FILE_TEXTS' default)")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    weights = args.weights or Path.home() / ".cache" / "e5-cog" / "tiny"
    if not (weights / "model.safetensors").is_file():
        write_checkpoint(weights)

    import os

    os.environ["E5_WEIGHTS_DIR"] = str(weights)
    from predict import Predictor

    async def run() -> dict:
        p = Predictor()
        await p.setup()
        await p.predict(texts=["warm up"] * 10, texts_file=None, output_file_format="npy", **BASE)
        report = {"device": p.embedder.profile.device, "weights": str(weights), "rss_mb_after_10_texts": rss_mb()}
        report["job"] = await bulk_job(p, args.texts, args.format)
        if args.target_seconds:
            report["calibration"] = report.pop("job")
            n = sized_job(args.texts, report["calibration"]["seconds"], args.target_seconds, args.max_texts)
            report["job"] = await bulk_job(p, n, args.format)
        return report

    report = asyncio.run(run())
    print(f"peak RSS after a 10-text request: {report['rss_mb_after_10_texts']:.0f} MB", flush=True)
    if "calibration" in report:
        print_job("calibration", report["calibration"])
    print_job("bulk", report["job"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
