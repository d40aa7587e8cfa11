"""What a request body costs the OpenAI-compatible server (openai_api.py) in memory, per MB of body.

    python -m benchmarks.body_cost              # each shape at 8 MB, and the largest valid body
    python -m benchmarks.body_cost --mb 2

For each shape (the worst ones for a JSON parser: many small items, each costing a Python object larger than
its bytes), a fresh server on a generated checkpoint is sent one body; the figure is its resident peak during
the request (VmHWM, reset first) less its resident memory before, divided by the body's size. The valid bodies
carry `dimensions: 5`, which the route refuses after the body is parsed and validated, so what is measured is
the body's cost and not the engine's. docs/openai.md quotes the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.bulk_run import memory_mb, reset_peak
from testkit.openai_server import OpenAIServer
from testkit.synthetic_checkpoint import write_checkpoint

MB = 1_000_000


def repeated(prefix: str, item: str, suffix: str, size: int) -> bytes:
    """`prefix` + `item` repeated (comma-separated) + `suffix`, about `size` bytes."""
    count = max(1, (size - len(prefix) - len(suffix)) // (len(item) + 1))
    return (prefix + ",".join([item] * count) + suffix).encode()


def bodies(size: int) -> dict[str, tuple[str, bytes]]:
    """shape -> (route, body of about `size` bytes). Each refused body has its first item right, so what
    follows is what a checker has to look at."""
    depth = min(size // 2, 100_000)
    return {
        "ints": ("/v1/embeddings", repeated('{"input": ["a",', "1", "]}", size)),
        "empty lists": ("/v1/embeddings", repeated('{"input": ["a",', "[]", "]}", size)),
        "empty dicts": ("/v1/embeddings", repeated('{"input": ["a",', "{}", "]}", size)),
        "nested lists": ("/v1/embeddings", ('{"input": ["a",' + "[" * depth + "]" * depth + "]}").encode()),
        "nested lists, top level": ("/v1/embeddings", ("[" * (size // 2) + "]" * (size // 2)).encode()),
        "short strings": ("/v1/embeddings", repeated('{"input": [', '"ab"', "]}", size)),
        "documents, ints": ("/rerank", repeated('{"query": "q", "documents": ["a",', "1", "]}", size)),
        "unknown fields": ("/v1/embeddings", repeated('{"input": "a",', '"x":0', "}", size)),
        "texts, one astral char": ("/v1/embeddings", valid_texts(size, "x", "\U0001F600")),
    }


def valid_texts(size: int, char: str, extra: str = "", escaped: bool = False) -> bytes:
    """A body of 1,000 texts (and `dimensions: 5`, refused once parsed) of about `size` bytes."""
    per_text = max(1, size // 1000 // (6 if escaped else len(char.encode())) - 4)
    texts = [char * per_text for _ in range(1000)]
    texts[0] += extra
    return json.dumps({"input": texts, "dimensions": 5}, ensure_ascii=escaped).encode()


def largest_valid() -> tuple[str, bytes]:
    """The largest text the default limits admit, 4,000,000 characters, as `\\uXXXX` escapes (6 bytes each,
    what `json.dumps` sends for CJK by default): the body E5_API_MAX_BODY_BYTES must let through."""
    texts = ["南" * 400 for _ in range(10_000)]
    return "/v1/embeddings", json.dumps({"input": texts, "dimensions": 5}).encode()


def measure(weights: Path, route: str, body: bytes, env: dict[str, str]) -> dict:
    with OpenAIServer(weights, env=env) as server:
        server.wait_until_ready()
        pid = server.proc.pid
        time.sleep(1.5)  # the engine's idle trim after warm-up
        before = memory_mb("VmRSS", pid)
        reset = reset_peak(pid)
        start = time.perf_counter()
        r = httpx.post(server.url + route, content=body, headers={"content-type": "application/json"}, timeout=600)
        seconds = time.perf_counter() - start
        peak = memory_mb("VmHWM", pid)
        message = r.json()["error"]["message"] if r.status_code >= 400 else ""
    mb = len(body) / MB
    return {"body_mb": round(mb, 2), "status": r.status_code, "rest_mb": round(before), "peak_mb": round(peak),
            "per_mb_of_body": round((peak - before) / mb, 2), "seconds": round(seconds, 2), "peak_reset": reset,
            "message": message[:90]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=8, help="size of each refused body, in MB")
    args = parser.parse_args(argv)
    env = {"E5_API_MAX_BODY_BYTES": str(32 * MB)}
    with tempfile.TemporaryDirectory() as tmp:
        weights = write_checkpoint(Path(tmp))
        shapes = {**bodies(int(args.mb * MB)), "largest valid (4M chars, escaped)": largest_valid()}
        print(f"{'shape':<36} {'body MB':>8} {'status':>6} {'rest MB':>8} {'peak MB':>8} {'MB per MB':>9} {'s':>6}")
        for name, (route, body) in shapes.items():
            row = measure(weights, route, body, env)
            print(f"{name:<36} {row['body_mb']:>8} {row['status']:>6} {row['rest_mb']:>8} {row['peak_mb']:>8} "
                  f"{row['per_mb_of_body']:>9} {row['seconds']:>6}  {row['message']}", flush=True)


if __name__ == "__main__":
    main()
