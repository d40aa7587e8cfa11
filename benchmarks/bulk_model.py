"""The bulk model (predict_bulk.py) through the real Cog server with uploads, at any size: is memory flat?

    python -m benchmarks.bulk_model --texts 100000 1000000 [--weights DIR] [--json out.json]

For each size, a fresh server of the bulk model (its schema in place, `--upload-url` at a local upload target,
scripts/upload_target.py) embeds N short texts (a number each) sent as a gzipped data URL, and this prints the peak resident
memory of the server and of its worker (VmHWM after a reset), the most disk the job's folder held (sampled
every 0.2 s), the response's size, the files uploaded, and texts per second. Uses the 2-layer generated test
checkpoint unless --weights is given.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.bulk_run import child_pids, memory_mb, peaks_during


def folder_bytes(root: Path) -> int:
    total = 0
    for path in root.glob("e5-result-*/*"):
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


def run(weights: Path, texts: int, temp: Path) -> dict:
    from scripts.upload_target import UploadTarget
    from testkit.cog_server import BulkCogServer

    work = temp / f"run-{texts}"
    (work / "tmp").mkdir(parents=True)
    body = gzip.compress("".join(f"{i}\n" for i in range(texts)).encode())  # short texts: a number each
    url = "data:application/gzip;base64," + base64.b64encode(body).decode()
    with UploadTarget(work / "uploaded") as target:
        server = BulkCogServer(weights, work / "server", upload_url=target.url, log_path=work / "server.log",
                               env={"TMPDIR": str(work / "tmp"), "MALLOC_ARENA_MAX": "2"})
        with server:
            assert server.wait_until(timeout=600) == "READY", (work / "server.log").read_text()[-2000:]
            worker = child_pids(server.proc.pid)[0]
            disk = {"max": 0}
            done = threading.Event()

            def watch_disk():
                while not done.is_set():
                    disk["max"] = max(disk["max"], folder_bytes(work / "tmp"))
                    time.sleep(0.2)

            watcher = threading.Thread(target=watch_disk)
            watcher.start()
            started = time.perf_counter()
            try:
                (status, out), before, peaks, reset = peaks_during(
                    {"server": server.proc.pid, "worker": worker},
                    lambda: server.predict({"texts_file": url}, timeout=24 * 3600))
            finally:
                done.set()
                watcher.join()
            seconds = time.perf_counter() - started
        uploaded = sum((target.folder / name).stat().st_size for name in set(target.received))
    record = {
        "texts": texts, "status": out.get("status"), "error": out.get("error"), "seconds": round(seconds, 1),
        "texts_per_s": round(texts / seconds, 1), "request_mb": round(len(url) / 1e6, 2),
        "response_bytes": len(json.dumps(out)), "files_uploaded": len(target.received),
        "uploaded_mb": round(uploaded / 1e6, 1), "job_folder_max_mb": round(disk["max"] / 1e6, 1),
        "peak_reset": reset,
    }
    for name in ("server", "worker"):
        record[name] = {"before_mb": round(before[name]), "peak_mb": round(peaks[name]),
                        "rise_mb": round(peaks[name] - before[name])}
    shutil.rmtree(work, ignore_errors=True)
    return record


def main(argv=None) -> int:
    from testkit.synthetic_checkpoint import write_checkpoint

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--json", type=Path, help="write the records here")
    args = parser.parse_args(argv)
    temp = Path(tempfile.mkdtemp(prefix="e5-bulk-model-"))
    records = []
    try:
        weights = args.weights or write_checkpoint(temp / "checkpoint")
        for n in args.texts:
            record = run(weights, n, temp)
            records.append(record)
            print(json.dumps(record), flush=True)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
