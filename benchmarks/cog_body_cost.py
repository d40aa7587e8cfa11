"""What a request body costs the Cog face: peak resident memory of the server (coglet) and its worker per MB
of body, for bodies whose list items each fail the schema and for a valid body of the same size.

    python -m benchmarks.cog_body_cost                  # 0.25, 0.5 and 1 MB, on a generated test checkpoint
    python -m benchmarks.cog_body_cost --megabytes 2

coglet 0.23.1 checks a request against the published schema before Python sees it and answers a 422 with one
error per failing item; building that answer is where the memory goes (docs/reliability.md, "Security").
Each body goes to a fresh server, with the image's 32 slots and malloc arena cap, so one body's leftovers do
not hide the next one's peak; "kept" is what the server still holds 5 s after answering.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.bulk_run import child_pids, memory_mb, peaks_during
from testkit.cog_server import CogServer
from testkit.synthetic_checkpoint import write_checkpoint

MB = 1_000_000


def bomb(megabytes: float) -> bytes:
    """`texts` of one string and then `1`s: every `1` fails `"type": "string"`, two bytes each."""
    count = int(megabytes * MB / 2)
    return ('{"input":{"texts":["a",' + ",".join(["1"] * count) + "]}}").encode()


def valid(megabytes: float) -> bytes:
    """As many 1,000-character texts as fill the same size: a request the schema and the engine accept."""
    text = ("protein pumpkin summit " * 44)[:1000]
    return json.dumps({"input": {"texts": [text] * max(1, int(megabytes * MB / 1003)), "include_vectors": False}}).encode()


def measure(weights: Path, body: bytes) -> dict:
    with CogServer(weights, env={"MALLOC_ARENA_MAX": "2"}) as server:
        server.wait_until()
        server.predict({"texts": ["warm up"]})
        processes = {"server": server.proc.pid, "worker": child_pids(server.proc.pid)[0]}
        (status, answer), before, peaks, reset = peaks_during(processes, lambda: server.post("/predictions", body, 600))
        time.sleep(5)
        kept = memory_mb("VmRSS", processes["server"]) - before["server"]
    rise = {name: round(peaks[name] - before[name]) for name in peaks}
    return {"status": status, "answer_mb": round(len(json.dumps(answer)) / MB, 1), "rise_mb": rise,
            "kept_mb": round(kept), "peak_reset": reset}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        weights = write_checkpoint(Path(tmp) / "checkpoint")
        for megabytes in args.megabytes:
            for shape, make in (("items failing the schema", bomb), ("valid texts", valid)):
                body = make(megabytes)
                result = measure(weights, body)
                total = sum(result["rise_mb"].values())
                print(f"{len(body) / MB:5.2f} MB body, {shape}: HTTP {result['status']}, answer {result['answer_mb']} MB, "
                      f"peak rise server {result['rise_mb']['server']} MB + worker {result['rise_mb']['worker']} MB "
                      f"= {total / (len(body) / MB):,.0f} MB per MB of body; server keeps {result['kept_mb']} MB",
                      flush=True)


if __name__ == "__main__":
    main()
