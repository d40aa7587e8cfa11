"""Time and memory of a bulk job: N short texts through `texts_file`, as the predictor serves it.

    python -m benchmarks.bulk_run [--texts 100000] [--weights DIR] [--format npy] [--target-seconds S] [--json out.json]
    python -m benchmarks.bulk_run --hostile [--megabytes 1000] [--sparse] [--json-lines]
    python -m benchmarks.bulk_run --server [--texts 20000 | --upload-megabytes 200]
    python -m benchmarks.bulk_run --read-speed [--texts 1000000]

Uses the 2-layer generated test checkpoint unless --weights is given. Prints the wall time, texts/s,
the peak resident memory of the process, and that of the same predictor after a 10-text request (so the
difference is what the bulk job itself held). It also samples the resident memory during the job and
prints the highest sample in each quarter of it: bounded memory shows as flat quarters, a leak as a rise.

--target-seconds: the job of --texts texts only calibrates; a second job, sized from its rate to take about
that long (at most --max-texts texts), is the run of record. For a machine whose speed is not known
beforehand (a GPU), where a fixed count would take either a second or ten minutes.

--hostile sends the files users upload by mistake or on purpose (HOSTILE below: a line of --megabytes MB, a
.json of short strings past E5_MAX_FILE_TEXTS, a gzip bomb past E5_MAX_FILE_BYTES, ...) through predict()
one after the other, and prints for each the error it got and how far it raised the process's peak resident
memory above its resident memory just before (Linux: the peak is reset first through /proc/self/clear_refs).
--sparse writes the big single-line files as two megabytes of text and a hole, so they cost no disk (a
reader that held the whole line would still read the hole: NUL bytes). Files go to a temp folder and are
deleted as soon as their case is done.

--server sends the N texts through the real Cog server instead, as `cog predict -i texts_file=@texts.txt`
does (a data URL), and prints the peak resident memory of the server and of its Python worker over the job
against their memory before it: what Cog itself holds to decode the upload and to return the result file
inline as a data URL.

--read-speed times one pass of the reader (read, decode, check every text; what a bulk job does twice, once to
check the whole file before embedding and once to embed it) over the N texts written in each input format.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import io
import json
import os
import random
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from testkit.synthetic_checkpoint import SEED_WORDS, write_checkpoint  # noqa: E402
from testkit.uploads import as_upload  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory_mb(field: str, pid: int | str = "self") -> float:
    """A /proc/<pid>/status memory figure in MB: VmRSS (now) or VmHWM (peak)."""
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1)) / 1024


def reset_peak(pid: int | str = "self") -> bool:
    """Restart VmHWM from the current resident memory (Linux 4.0+); False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peaks_during(pids: dict[str, int], call):
    """Run `call` with each process's peak reset first: (its result, resident MB before, peak MB during, whether
    every reset took) per name in `pids` (the server and its worker)."""
    before = {name: memory_mb("VmRSS", pid) for name, pid in pids.items()}
    reset = all([reset_peak(pid) for pid in pids.values()])  # a list: every process is reset, not the first few
    result = call()
    peaks = {name: memory_mb("VmHWM", pid) for name, pid in pids.items()}
    return result, before, peaks, reset


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is `pid` (the server's Python worker), from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def quarter_peaks(samples: list[float]) -> list[float]:
    """The highest sample in each quarter of a series (each quarter holds at least one sample, if any)."""
    n = len(samples)
    return [max(samples[i * n // 4 : max((i + 1) * n // 4, i * n // 4 + 1)], default=0.0) for i in range(4)]


class PeriodicSampler:
    """Calls `sample()` every `interval_s` on a thread while the `with` block runs."""

    interval_s = 0.2

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self):
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class RssSampler(PeriodicSampler):
    """This process's resident memory every 0.2 s; Linux only (reads /proc)."""

    def __init__(self):
        super().__init__()
        self.samples: list[float] = []

    def sample(self) -> None:
        self.samples.append(current_rss_mb())


BASE = dict(task="Given a web search query, retrieve relevant passages that answer the query", input_type="document",
            normalize=True, truncate=True, documents=None, top_k=None, encoding_format="float")


# --- hostile files -----------------------------------------------------------------------------------------

MB = 1024 * 1024


def write_line(path: Path, head: bytes, megabytes: int, sparse: bool, tail: bytes = b"") -> None:
    """`head`, then `megabytes` MB of one unbroken line: 'a's, or with `sparse` two MB of them (past the
    1,265,536 bytes a line may have) and a hole."""
    with open(path, "wb") as f:
        f.write(head)
        if sparse:
            f.write(b"a" * 2 * MB)
            f.truncate(len(head) + megabytes * MB)
            f.seek(0, os.SEEK_END)
        else:
            for _ in range(megabytes):
                f.write(b"a" * MB)
        f.write(tail)


def write_json_strings(path: Path, count: int) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write("[")
        for start in range(0, count, 100_000):
            f.write(",".join(f'"text {i}"' for i in range(start, min(count, start + 100_000))) + ",")
        f.write('"last"]')


def write_gzip_bomb(path: Path, decompressed_bytes: int) -> None:
    """Gzip members of 1 MB of 99,999-character lines each, repeated: ~1,000x smaller than what they hold."""
    member = gzip.compress(("x" * 99_999 + "\n").encode() * 10)
    with open(path, "wb") as f:
        for _ in range(decompressed_bytes // 1_000_000 + 1):
            f.write(member)


def hostile_cases(megabytes: int, sparse: bool, limits) -> list[tuple[str, str, object]]:
    """(name, file name, writer): what each hostile file is, and the function that writes it to a path."""
    return [
        (f"{megabytes} MB .txt, one line", "line.txt", lambda p: write_line(p, b"", megabytes, sparse)),
        (f"{megabytes} MB .jsonl, one line", "line.jsonl", lambda p: write_line(p, b'{"text": "', megabytes, sparse)),
        (f"{megabytes} MB .csv, one field", "field.csv", lambda p: write_line(p, b'id,text\n1,"', megabytes, sparse)),
        (f"{min(megabytes, 20)} MB .csv, a quote never closed", "quote.csv",
         lambda p: p.write_bytes(b'id,text\n1,"open\n' + b"2,short line\n" * (min(megabytes, 20) * MB // 13))),
        (f".json, {3 * limits.max_file_texts:,} short strings", "strings.json",
         lambda p: write_json_strings(p, 3 * limits.max_file_texts)),
        (f".txt.gz bomb of {5 * limits.max_file_bytes / 1e9:g} GB", "bomb.txt.gz",
         lambda p: write_gzip_bomb(p, 5 * limits.max_file_bytes)),
        (f"{megabytes} MB of zeros named .txt", "zeros.txt", lambda p: p.write_bytes(b"") or os.truncate(p, megabytes * MB)),
    ]


async def refuse(predictor, path: Path, base: dict) -> dict:
    """One hostile file through predict(): its error and how far it raised the peak above the memory before."""
    from e5.memory import return_freed_memory

    return_freed_memory()  # what an earlier case freed would otherwise hide this one's growth
    reset = reset_peak()
    before = memory_mb("VmRSS")
    start = time.perf_counter()
    try:
        await predictor.predict(texts=None, texts_file=as_upload(path), output_file_format="npy", **base)
        error = None
    except Exception as err:  # noqa: BLE001 - what a user would see, whatever it is
        error = f"{type(err).__name__}: {err}"
    return {"seconds": round(time.perf_counter() - start, 2), "peak_rise_mb": round(memory_mb("VmHWM") - before, 1),
            "rss_before_mb": round(before), "peak_was_reset": reset, "error": error}


def run_hostile(predictor, base: dict, args) -> list[dict]:
    from e5.validation import Limits

    folder = Path(tempfile.mkdtemp(prefix="e5-hostile-"))
    results = []

    async def run():
        await predictor.setup()
        warm = folder / "warm.txt"
        warm.write_text("\n".join(f"warm up {i}" for i in range(100)), encoding="utf-8")
        await predictor.predict(texts=None, texts_file=as_upload(warm), output_file_format="npy", **base)
        for name, filename, write in hostile_cases(args.megabytes, args.sparse, Limits.from_env()):
            path = folder / filename
            write(path)
            result = {"case": name, "file_mb": round(path.stat().st_size / MB, 1), **await refuse(predictor, path, base)}
            path.unlink()
            results.append(result)
            if args.json_lines:
                print(json.dumps(result), flush=True)
            else:
                print(f"{name}: {result['file_mb']} MB file, peak +{result['peak_rise_mb']} MB over "
                      f"{result['rss_before_mb']} MB, {result['seconds']} s\n    {result['error']}", flush=True)

    try:
        asyncio.run(run())
    finally:
        shutil.rmtree(folder)
    return results


def run_through_server(weights: Path, texts_path: Path) -> None:
    """One bulk job through the real server; `texts_path` a file of texts, or a hostile file it must refuse."""
    import base64

    from testkit.cog_server import CogServer

    upload = "data:text/plain;base64," + base64.b64encode(texts_path.read_bytes()).decode()
    temp = Path(tempfile.mkdtemp(prefix="e5-server-tmp-"))
    with CogServer(weights, concurrency=1, env={"TMPDIR": str(temp)}) as server:
        assert server.wait_until() == "READY"
        worker = child_pids(server.proc.pid)[0]
        server.predict({"texts": ["warm up"] * 10})
        start = time.perf_counter()
        (status, body), before, peaks, reset = peaks_during(
            {"server": server.proc.pid, "worker": worker},
            lambda: server.predict({"texts_file": upload, "input_type": "document"}, timeout=24 * 3600))
        seconds = time.perf_counter() - start
    shutil.rmtree(temp)
    sent = f"{texts_path.stat().st_size / 1e6:.1f} MB of texts sent as a {len(upload) / 1e6:.1f} MB data URL"
    if body.get("status") == "succeeded":
        result = body["output"]["embeddings_file"]
        shape = np.load(io.BytesIO(base64.b64decode(result.split(",", 1)[1]))).shape
        print(f"server: {sent}; {shape} back as a {len(result) / 1e6:.1f} MB data URL in {seconds:.1f}s")
    else:
        print(f"server: {sent}; {body.get('status')} in {seconds:.1f}s: {str(body.get('error'))[-160:]}")
    for name in ("server", "worker"):
        print(f"  {name}: resident {before[name]:.0f} MB before, peak {peaks[name]:.0f} MB during the job "
              f"(+{peaks[name] - before[name]:.0f} MB{'' if reset else ', peak not reset: since start'})")


def read_speed(texts_path: Path) -> None:
    from e5.files import open_texts_file, read_chunks
    from e5.validation import Limits

    texts = texts_path.read_text(encoding="utf-8").split("\n")[:-1]  # not splitlines: \x85 and \u2028 are text here
    folder = texts_path.parent
    writers = {
        "txt": lambda f: f.write("\n".join(texts) + "\n"),
        "jsonl": lambda f: f.writelines(json.dumps({"text": t}) + "\n" for t in texts),
        "json": lambda f: json.dump(texts, f),
        "csv": lambda f: csv.writer(f).writerows([("id", "text"), *enumerate(texts)]),
    }
    limits = Limits()
    for fmt, write in writers.items():
        for compressed in (False, True):
            path = folder / f"speed.{fmt}{'.gz' if compressed else ''}"
            with (gzip.open(path, "wt", encoding="utf-8", newline="") if compressed
                  else open(path, "w", encoding="utf-8", newline="")) as f:
                write(f)
            start = time.perf_counter()
            count = sum(len(chunk) for chunk in read_chunks(open_texts_file(path, limits), limits, 4096, 4_000_000))
            seconds = time.perf_counter() - start
            print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, {count} texts read and checked in {seconds:.2f}s "
                  f"({seconds / count * 1e6:.1f} us a text)")
            path.unlink()


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


async def bulk_job(predictor, n: int, fmt: str) -> dict:
    """One `texts_file` request of `n` texts through predict(): time, resident memory, the output's shape."""
    path = write_texts(n)
    start = time.perf_counter()
    with RssSampler() as sampler:
        out = await predictor.predict(texts=None, texts_file=as_upload(path), output_file_format=fmt, **BASE)
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
    parser.add_argument("--max-texts", type=int, default=100_000, help="the sized job's cap (E5_MAX_FILE_TEXTS' default)")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--hostile", action="store_true", help="refuse the hostile files instead (see above)")
    parser.add_argument("--megabytes", type=int, default=1000, help="size of the big hostile files")
    parser.add_argument("--sparse", action="store_true", help="big single-line files as a hole after 2 MB of text")
    parser.add_argument("--json-lines", action="store_true", help="one JSON object per hostile case on stdout")
    parser.add_argument("--server", action="store_true", help="through the real Cog server, as a data URL")
    parser.add_argument("--read-speed", action="store_true", help="time one pass of the reader per format")
    parser.add_argument("--upload-megabytes", type=int, help="with --server: send a one-line file of this size")
    args = parser.parse_args(argv)
    weights = args.weights or Path.home() / ".cache" / "e5-cog" / "tiny"
    if not (weights / "model.safetensors").is_file():
        write_checkpoint(weights)

    os.environ["E5_WEIGHTS_DIR"] = str(weights)
    from predict import Predictor

    if args.hostile:
        run_hostile(Predictor(), BASE, args)
        return 0
    if args.server or args.read_speed:
        path = write_texts(args.texts)
        if args.server:
            if args.upload_megabytes:  # what Cog holds to decode an upload the predictor refuses at once
                path = path.with_name("line.txt")
                write_line(path, b"", args.upload_megabytes, sparse=False)
            run_through_server(weights, path)
        else:
            read_speed(path)
        return 0

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
