"""What a response costs the real Cog server and its worker: peak resident memory per byte of JSON returned.

    python -m benchmarks.response_memory [--cases 4000x0,1000x1000,...] [--weights DIR] [--json out.json]
    python -m benchmarks.response_memory --synthetic [--kinds float:4096000,entry:2000000,...]
    python -m benchmarks.response_memory --refused 20000000

Each case `QxD[:encoding[:top_k]]` sends Q short texts (and D documents to rank against them) to one fresh
server's warm worker, after resetting the peak resident memory (VmHWM, through /proc/PID/clear_refs) of the
server process and of its Python worker, and prints the peak rise of each over its memory before, the
response's JSON size, the ratio of the two, and the worker's resident memory 2 s after the answer (what it kept).
These ratios are the server's and the worker's terms in e5/memory_model.py. Uses the 2-layer generated test
checkpoint unless --weights is given.

--synthetic measures each kind of output element on its own, with no model: a server around a stub predictor
(SYNTHETIC below) that returns COUNT elements of KIND in an object, as the real one does: `float` (vector
components, float64 rounded to 8 decimals), `score` (float32 rounded to 6, today's `scores`), `index` (int64,
today's `ranking`), `int8`, `binary` (0-255), `base64` (one 5,464-character string per vector) and `entry`
(`{"index": i, "score": s}` dicts in a list per query of 1,000) or `model_entry` (the same as Cog
`BaseModel` objects). It prints the bytes each element costs the
server and the worker at their peak.

--tail follows each case in time instead: resident memory of both processes every 10 ms, and the moment
predict() returned (the timestamp of its report line in the server's log). It prints how long after that
return the client had the whole response read and parsed (an upper bound of the time the server holds it),
how long each process stayed above half its rise (reads long where an allocator keeps freed memory), and the
hold the memory budget gives a reservation of that estimate (e5/budget.py `response_tail_s`).

--refused N sends one request of N one-character texts (refused by E5_MAX_TEXTS) and prints the worker's
peak and its resident memory 3 s after the answer: what a refusal leaves behind.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.bulk_run import child_pids, memory_mb, peaks_during

DEFAULT_CASES = "2000x0,4000x0,4000x0:base64,500x500,1000x1000,1500x1500,1000x1000:float:1"


def parse_case(case: str) -> dict:
    shape, _, rest = case.partition(":")
    queries, documents = (int(n) for n in shape.split("x"))
    encoding, _, top_k = rest.partition(":")
    return {"queries": queries, "documents": documents, "encoding": encoding or "float",
            "top_k": int(top_k) if top_k else None}


LONG_TEXT = "南瓜的家常做法很多，清炒南瓜丝是其中一种，原料是嫩南瓜半个。"  # CJK: about a token a character


def inputs(case: dict) -> dict:
    body = {"texts": [f"query {i} about protein" for i in range(case["queries"])], "input_type": "document",
            "encoding_format": case["encoding"]}
    if case.get("long_chars"):  # texts past 512 tokens, embedded whole (`long_texts`)
        repeat = -(-case["long_chars"] // len(LONG_TEXT))
        body["texts"] = [f"{i} " + (LONG_TEXT * repeat)[: case["long_chars"]] for i in range(case["queries"])]
        body["long_texts"] = case["long_texts"]
    if case["documents"]:
        body["documents"] = [f"passage {i}: 46 grams a day" for i in range(case["documents"])]
    if case["top_k"]:
        body["top_k"] = case["top_k"]
    return body


def measure(server, worker: int, case: dict) -> dict:
    pids = {"server": server.proc.pid, "worker": worker}
    time.sleep(2.0)  # the worker's idle trim runs after 1 s
    body = json.dumps({"input": inputs(case)}).encode()
    started = time.perf_counter()
    (status, out), before, peaks, reset = peaks_during(pids, lambda: server.post("/predictions", body, timeout=1800))
    seconds = time.perf_counter() - started
    time.sleep(2.0)
    after = {name: memory_mb("VmRSS", pid) for name, pid in pids.items()}
    response_bytes = len(json.dumps(out.get("output")).encode())
    result = {**case, "status": out.get("status"), "error": out.get("error"), "seconds": round(seconds, 1),
              "request_mb": round(len(body) / 1e6, 1), "response_mb": round(response_bytes / 1e6, 1),
              "peak_reset": reset}
    for name in pids:
        rise = peaks[name] - before[name]
        result[name] = {"before_mb": round(before[name]), "peak_mb": round(peaks[name]), "rise_mb": round(rise),
                        "after_mb": round(after[name]), "rise_per_response_byte": round(rise * 1e6 / max(response_bytes, 1), 2)}
    return result


def measure_tail(server, worker: int, case: dict, log_path: Path) -> dict:
    """How long the response stays in memory after predict() returns, against the budget's hold for it."""
    from e5.budget import response_tail_s
    from e5.memory_model import Shape, estimate

    pids = {"server": server.proc.pid, "worker": worker}
    time.sleep(2.0)
    before = {name: memory_mb("VmRSS", pid) for name, pid in pids.items()}
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append((time.time(), {name: memory_mb("VmRSS", pid) for name, pid in pids.items()}))
            time.sleep(0.01)

    thread = threading.Thread(target=sample)
    thread.start()
    status, out = server.predict(inputs(case), timeout=1800)
    answered = time.time()
    time.sleep(1.0)
    done.set()
    thread.join()
    returned = None
    for line in log_path.read_text().splitlines():  # coglet logs the worker's stdout as JSON with a timestamp
        if f"e5: texts {case['queries'] + case['documents']}," in line:
            stamp = json.loads(line)["timestamp"]
            returned = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    result = {**case, "status": out.get("status"), "answered_after_return_s": round(answered - returned, 2)}
    for name in pids:
        rise = max(m[name] for _, m in samples) - before[name]
        held = [t for t, m in samples if m[name] - before[name] > rise / 2 and t >= returned]
        result[name] = {"rise_mb": round(rise), "held_after_return_s": round(max(held) - returned, 2) if held else 0.0}
    body = inputs(case)
    chars = sum(len(t) for t in body["texts"] + body.get("documents", []))
    shape = Shape(case["queries"], case["documents"], chars, case["encoding"], case["top_k"])
    parts = estimate(shape)
    result.update(estimate_mb=round(sum(parts.values()) / 1e6),
                  budget_hold_s=round(response_tail_s(sum(parts.values()), parts["ranking"]), 2))
    return result


SYNTHETIC = '''
import numpy as np
from cog import BaseModel, BasePredictor, Input
from e5.encodings import output_array

class Output(BaseModel):
    values: list

class RankedDocument(BaseModel):
    index: int
    score: float

class Predictor(BasePredictor):
    def predict(self, kind: str = Input(default="float"), count: int = Input(default=1024)) -> Output:
        rng = np.random.default_rng(0)
        if kind == "base64":
            return Output(values=["A" * 5464 for _ in range(count)])
        if kind == "entry":
            rows = [[{"index": int(i), "score": round(float(s), 6)} for i, s in enumerate(rng.random(1000))]
                    for _ in range(count // 1000)]
            return Output(values=rows)
        if kind == "model_entry":
            rows = [[RankedDocument(index=int(i), score=round(float(s), 6)) for i, s in enumerate(rng.random(1000))]
                    for _ in range(count // 1000)]
            return Output(values=rows)
        width = 1000 if kind in ("score", "index") else 128 if kind == "binary" else 1024
        shape = (count // width, width)
        values = {"float": lambda: np.round(rng.standard_normal(shape) / 32, 8),
                  "score": lambda: np.round(rng.random(shape, dtype=np.float32), 6),
                  "index": lambda: np.argsort(rng.random(shape), axis=1),
                  "int8": lambda: rng.integers(-127, 128, shape, dtype=np.int8),
                  "binary": lambda: rng.integers(0, 256, shape, dtype=np.uint8)}[kind]()
        return Output(values=output_array(values))
'''


def measure_synthetic(kinds: str) -> list[dict]:
    """Each KIND:COUNT through a fresh server around the stub predictor: bytes per element at the peak."""
    import os
    import subprocess
    import sys

    from testkit.cog_server import ROOT, CogServer, free_port

    records = []
    for item in kinds.split(","):
        kind, count = item.split(":")
        folder = Path(tempfile.mkdtemp(prefix="e5-synthetic-"))
        (folder / "predict.py").write_text(SYNTHETIC)
        server = CogServer(folder)  # only its HTTP helpers: the process is started here, in `folder`
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "PYTHONPATH": str(ROOT), "COG_PREDICT_TYPE_STUB": "predict.py:Predictor", "PORT": str(server.port),
               "TMPDIR": str(folder)}
        server.proc = subprocess.Popen([sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"], cwd=folder,
                                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            assert server.wait_until() == "READY"
            worker = child_pids(server.proc.pid)[0]
            server.predict({"kind": kind, "count": 1000})
            time.sleep(1.0)
            pids = {"server": server.proc.pid, "worker": worker}
            (status, out), before, peaks, _ = peaks_during(
                pids, lambda: server.predict({"kind": kind, "count": int(count)}, timeout=1800))
            assert out.get("status") == "succeeded", out
            response_bytes = len(json.dumps(out["output"]).encode())
            record = {"kind": kind, "count": int(count), "response_mb": round(response_bytes / 1e6, 1),
                      "json_bytes_per_element": round(response_bytes / int(count), 2)}
            for name in pids:
                rise = (peaks[name] - before[name]) * 2**20
                record[name] = {"before_mb": round(before[name]), "rise_mb": round(rise / 2**20),
                                "bytes_per_element": round(rise / int(count), 1)}
            records.append(record)
            print(json.dumps(record), flush=True)
        finally:
            server.stop()
            shutil.rmtree(folder, ignore_errors=True)
    return records


def main(argv=None) -> int:
    from testkit.cog_server import CogServer
    from testkit.synthetic_checkpoint import write_checkpoint

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=DEFAULT_CASES)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--json", type=Path, help="write the records here")
    parser.add_argument("--env", action="append", default=[], help="NAME=value for the server (repeatable)")
    parser.add_argument("--synthetic", action="store_true", help="each output element kind, through a stub predictor")
    parser.add_argument("--kinds", default="float:4096000,score:4000000,index:4000000,int8:4096000,binary:4096000,"
                                           "base64:8000,entry:2000000")
    parser.add_argument("--refused", type=int, help="send one refused request of this many one-character texts")
    parser.add_argument("--tail", action="store_true", help="how long each response is held after predict() returns")
    args = parser.parse_args(argv)
    if args.synthetic:
        records = measure_synthetic(args.kinds)
        if args.json:
            args.json.write_text(json.dumps(records, indent=1) + "\n")
        return 0
    temp = Path(tempfile.mkdtemp(prefix="e5-response-memory-"))
    weights = args.weights or write_checkpoint(temp / "checkpoint")
    env = {"TMPDIR": str(temp), **dict(item.split("=", 1) for item in args.env)}
    records = []
    try:
        log_path = temp / "server.log"
        with CogServer(weights, concurrency=1, env=env, log_path=log_path) as server:
            assert server.wait_until() == "READY"
            worker = child_pids(server.proc.pid)[0]
            server.predict({"texts": ["warm up"] * 10})
            if args.refused:
                time.sleep(2.0)
                body = json.dumps({"input": {"texts": ["a"] * args.refused}}).encode()
                (status, out), before, peaks, _ = peaks_during(
                    {"worker": worker}, lambda: server.post("/predictions", body, timeout=1800))
                time.sleep(3.0)
                record = {"refused_texts": args.refused, "request_mb": round(len(body) / 1e6, 1), "http": status,
                          "status": out.get("status"), "error": str(out.get("error"))[:200],
                          "worker_before_mb": round(before["worker"]), "worker_peak_mb": round(peaks["worker"]),
                          "worker_3s_after_mb": round(memory_mb("VmRSS", worker))}
                records.append(record)
                print(json.dumps(record), flush=True)
            for case in (args.cases.split(",") if not args.refused else []):
                case = parse_case(case)
                record = measure_tail(server, worker, case, log_path) if args.tail else measure(server, worker, case)
                records.append(record)
                print(json.dumps(record), flush=True)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
