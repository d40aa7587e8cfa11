"""The container's memory budget on the real servers (e5/budget.py): more large requests at once than the budget
holds, on the Cog face (coglet, 32 slots, the image's schema) and on the OpenAI face.

Each face gets a small budget and a short wait; eight large requests are sent at once (each ~760 MB by the
memory model, two fit), and a single query while they run. Every large request either succeeds with exact
vectors (its own texts, in its own order) or is refused with the budget's message; none is lost; the query is
answered while large ones are still running or waiting (it never waits in their line); the peak rise of the
server's and worker's resident memory together stays within the budget plus the 20% margin the default budget
keeps. Without the budget (tested by hand: `E5_MEMORY_BUDGET_MB=100000`) the same load rose past twice the
budget on the Cog face (docs/reliability.md, "One memory budget").
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from benchmarks.bulk_run import child_pids, memory_mb, reset_peak
from e5 import Embedder
from testkit.cog_server import CogServer
from testkit.openai_server import OpenAIServer

BUDGET_MB, WAIT_S, MARGIN = 1600, 1, 0.2
LARGE_TEXTS, LARGE_REQUESTS = 1900, 8
TOLERANCE = 1e-5  # a text's vector depends a little on the forward it shares
ENV = {"E5_MEMORY_BUDGET_MB": str(BUDGET_MB), "E5_MEMORY_WAIT_S": str(WAIT_S), "MALLOC_ARENA_MAX": "2"}
BASE = [f"passage {i}: protein, pumpkins and {i % 17} other things" for i in range(LARGE_TEXTS)]
QUERY = "how much protein should a female eat"


def large_texts(i: int) -> list[str]:
    """Request i's texts: the same passages in an order of its own, so that a mix-up shows."""
    shift = i * 97 % LARGE_TEXTS
    return BASE[shift:] + BASE[:shift]


@pytest.fixture(scope="module")
def expected(checkpoint_dir) -> dict[str, np.ndarray]:
    return dict(zip(BASE, Embedder.load(checkpoint_dir, device="cpu").embed_texts(BASE)))


class Peak:
    """The peak rise of resident memory over a set of processes, summed (VmHWM after a reset)."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.before = {pid: memory_mb("VmRSS", pid) for pid in pids}
        assert all([reset_peak(pid) for pid in pids])

    def rise_mb(self) -> float:
        return sum(memory_mb("VmHWM", pid) - self.before[pid] for pid in self.pids) * 2**20 / 1e6


def run_at_once(large, query) -> tuple[list, dict, float, float]:
    """Send every large request at once and the query 0.5 s later: (large results, query result, time the
    query was answered, time the last large one was answered)."""
    done: dict[str, float] = {}
    with ThreadPoolExecutor(LARGE_REQUESTS + 1) as pool:
        futures = [pool.submit(large, i) for i in range(LARGE_REQUESTS)]
        time.sleep(0.5)
        query_result = query()
        done["query"] = time.monotonic()
        results = [f.result() for f in futures]
    return results, query_result, done["query"], max(r["answered"] for r in results)


def check_large(i: int, vectors: list, expected: dict) -> None:
    got = np.asarray(vectors, dtype=np.float32)
    want = np.stack([expected[t] for t in large_texts(i)])
    assert got.shape == want.shape and np.abs(got - want).max() < TOLERANCE, f"request {i}: wrong vectors"


# --- the Cog face -------------------------------------------------------------------------------------------


def test_cog_face_more_large_requests_than_the_budget_holds(checkpoint_dir, tmp_path, expected):
    from benchmarks.loadtest import send_retrying_busy

    log = tmp_path / "server.log"
    with CogServer(checkpoint_dir, env=ENV, log_path=log) as server:
        assert server.wait_until() == "READY", log.read_text()[-3000:]
        assert f"memory budget {BUDGET_MB} MB (E5_MEMORY_BUDGET_MB)" in log.read_text()
        server.predict({"texts": ["warm up"] * 10})
        time.sleep(1.5)
        peak = Peak([server.proc.pid, *child_pids(server.proc.pid)])

        def large(i):
            result = send_retrying_busy(server, {"texts": large_texts(i), "input_type": "document"})
            return {**result, "answered": time.monotonic()}

        def query():
            return send_retrying_busy(server, {"texts": [QUERY]})

        results, query_result, query_done, last_done = run_at_once(large, query)
        rise = peak.rise_mb()
        too_large = server.predict({"texts": BASE * 3, "input_type": "document"})[1]

    succeeded = refused = 0
    for i, r in enumerate(results):
        assert r["status"] == 200, f"request {i} lost or refused by the server: {r}"
        body = r["body"]
        if body["status"] == "succeeded":
            check_large(i, body["output"]["embeddings"], expected)
            assert 700 < body["metrics"]["memory_reserved_mb"] < 800, body["metrics"]
            assert body["metrics"]["memory_in_use_mb"] <= BUDGET_MB and body["metrics"]["seconds"]["memory_wait"] >= 0
            succeeded += 1
        else:
            assert body["status"] == "failed" and "memory is taken by other requests" in body["error"], body
            assert f"of the {BUDGET_MB} MB budget" in body["error"] and "E5_MEMORY_WAIT_S" in body["error"], body
            refused += 1
    assert query_result["body"]["status"] == "succeeded", query_result
    print(f"cog face: {succeeded} succeeded, {refused} refused; server + worker rose {rise:.0f} MB "
          f"(budget {BUDGET_MB} MB); the query took {query_result['seconds']:.2f} s")
    assert succeeded >= 2 and refused >= 1  # two fit at once; the third waits past WAIT_S behind their holds
    assert query_done < last_done  # answered while large requests were still held, not after their line
    assert rise <= BUDGET_MB * (1 + MARGIN), f"server + worker rose {rise:.0f} MB"
    assert too_large["status"] == "failed" and f"whole memory budget of {BUDGET_MB} MB" in too_large["error"]


# --- the OpenAI face ----------------------------------------------------------------------------------------


def test_openai_face_more_large_requests_than_the_budget_holds(checkpoint_dir, tmp_path, expected):
    log = tmp_path / "server.log"
    with OpenAIServer(checkpoint_dir, env=ENV, log_path=log) as server:
        server.wait_until_ready()
        health = server.health()[1]["memory"]
        assert health["budget_mb"] == BUDGET_MB and health["in_use_mb"] == 0
        with httpx.Client(timeout=600) as http:
            http.post(server.url + "/v1/embeddings", json={"input": ["warm up"] * 10})
        time.sleep(1.5)
        peak = Peak([server.proc.pid])
        seen = {"in_use_mb": 0.0, "waiting": 0}
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                memory = server.health()[1]["memory"]
                seen["in_use_mb"] = max(seen["in_use_mb"], memory["in_use_mb"])
                seen["waiting"] = max(seen["waiting"], memory["waiting"])
                time.sleep(0.05)

        def post(body):
            with httpx.Client(timeout=600) as http:
                r = http.post(server.url + "/v1/embeddings", json=body)
            return {"status": r.status_code, "body": r.json(), "headers": r.headers, "answered": time.monotonic()}

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            results, query_result, query_done, last_done = run_at_once(
                lambda i: post({"input": large_texts(i), "input_type": "document"}), lambda: post({"input": QUERY}))
        finally:
            stop.set()
            watcher.join()
        rise = peak.rise_mb()
        too_large = post({"input": BASE * 3, "input_type": "document"})
        after = server.health()[1]["memory"]

    succeeded = refused = 0
    for i, r in enumerate(results):
        if r["status"] == 200:
            check_large(i, [d["embedding"] for d in r["body"]["data"]], expected)
            succeeded += 1
        else:
            error = r["body"]["error"]
            assert r["status"] == 503 and error["code"] == "memory_busy", r
            assert r["headers"]["retry-after"] == "5" and f"of the {BUDGET_MB} MB budget" in error["message"]
            refused += 1
    assert query_result["status"] == 200
    print(f"openai face: {succeeded} succeeded, {refused} refused; the server rose {rise:.0f} MB; /health saw "
          f"{seen}; after: {after}")
    assert succeeded >= 2 and refused >= 1
    assert query_done < last_done
    assert 0 < seen["in_use_mb"] <= BUDGET_MB + 16 and seen["waiting"] >= 1
    assert rise <= BUDGET_MB * (1 + MARGIN), f"the server rose {rise:.0f} MB"
    assert too_large["status"] == 400 and too_large["body"]["error"]["code"] == "request_too_large"
    assert f"whole memory budget of {BUDGET_MB} MB" in too_large["body"]["error"]["message"]
    assert after["refused_busy"] == refused and after["peak_mb"] <= BUDGET_MB + 16
