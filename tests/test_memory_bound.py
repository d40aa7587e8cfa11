"""E5_MAX_REQUEST_MB holds on the real Cog server: the worst requests the limit admits stay under it.

A fresh server (schema in place) with the limit at 1,500 MB; for each kind of request, the largest one that
validation admits (found by bisection through `validate_request` itself) is sent, and the peak rise of the
server process and of its worker together (VmHWM after a reset through /proc/PID/clear_refs, less the resident
memory before) must stay below the limit. One more text is refused before any work, with the limit named.
"""

from __future__ import annotations

import pytest

from benchmarks.response_memory import inputs, measure
from e5 import InputError, ranking
from e5.validation import Limits, Options, Request, validate_request
from testkit.cog_server import CogServer

LIMIT_MB = 1500


@pytest.fixture
def server(checkpoint_dir, tmp_path_factory):  # a fresh one per case: "at rest" is a server that served nothing big
    log = tmp_path_factory.mktemp("memory-bound") / "server.log"
    env = {"E5_MAX_REQUEST_MB": str(LIMIT_MB), "MALLOC_ARENA_MAX": "2"}  # as cog.yaml sets it in the image
    with CogServer(checkpoint_dir, concurrency=1, env=env, log_path=log) as s:
        assert s.wait_until() == "READY", log.read_text()[-3000:]
        s.predict({"texts": ["warm up"] * 10})
        yield s


def admitted(case: dict, limit_mb: int = LIMIT_MB) -> bool:
    body = inputs(case)
    options = Options(input_type=body["input_type"], encoding_format=body["encoding_format"],
                      long_texts=body.get("long_texts", "truncate"))
    try:
        validate_request(Request(body["texts"], body.get("documents"), body.get("top_k"), options=options),
                         Limits(max_request_mb=limit_mb))
        return True
    except InputError:
        return False


def largest(make, limit_mb: int = LIMIT_MB) -> int:
    """The largest n for which the request make(n) is admitted (bisection)."""
    low, high = 1, 2
    while admitted(make(high), limit_mb):
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if admitted(make(mid), limit_mb) else (low, mid)
    return low


CASES = {
    "texts as floats": lambda n: {"queries": n, "documents": 0, "encoding": "float", "top_k": None},
    "queries x documents, no top_k": lambda n: {"queries": n, "documents": n, "encoding": "float", "top_k": None},
}
# With top_k the model counts no `scores` matrix: true once `top_k` leaves it out of the response (the
# `ranking` of {index, score} entries, e5/ranking.py's `ranking`); before that, a 5,000 x 5,000 request with
# top_k still returned 25,000,000 scores (549 MB of JSON, +7.4 GB) and this case failed.
if hasattr(ranking, "ranking"):
    CASES["queries x documents, top_k 10"] = lambda n: {"queries": n, "documents": n, "encoding": "base64", "top_k": 10}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_worst_admitted_request_stays_under_the_limit_and_one_more_text_is_refused(server, name):
    from benchmarks.bulk_run import child_pids

    make = CASES[name]
    n = largest(make)
    worker = child_pids(server.proc.pid)[0]
    result = measure(server, worker, make(n))
    assert result["status"] == "succeeded", result
    # /proc reports KiB (the figures here are MiB); the limit is in MB (10^6 bytes)
    rise_mib = sum(result[p]["peak_mb"] - result[p]["before_mb"] for p in ("server", "worker"))
    rise = rise_mib * 2**20 / 1e6
    print(f"{name}: n={n}, server + worker rose {rise:.0f} MB (limit {LIMIT_MB} MB)", result)
    assert 0 < rise < LIMIT_MB, result
    refused = measure(server, worker, make(n + 1))
    assert refused["status"] == "failed" and "(E5_MAX_REQUEST_MB)" in refused["error"], refused


LONG_LIMIT_MB = 800  # a window's vector is returned as 1,024 numbers: ~1,300 windows, two or three minutes of CPU


def test_long_texts_in_windows_stay_under_the_limit_the_memory_model_counts_them_for(checkpoint_dir, tmp_path):
    """`long_texts` windows, the mode whose response grows with the text: texts of 6,000 CJK characters (about
    a token a character, so the count before tokenizing is near the real one), as many as the limit admits.

    The server is warmed with two such texts first: every window is a full 512-token row, so its forwards run at
    the device profile's whole token budget, and the first such forward grows the worker's heap by its
    activations once (~100 MB on this checkpoint). That is the process's, not the request's: one forward runs
    at a time whatever the requests, and the container budget's margin covers it (e5/budget.py)."""
    from benchmarks.bulk_run import child_pids

    def make(n):
        return {"queries": n, "documents": 0, "encoding": "float", "top_k": None, "long_chars": 6000,
                "long_texts": "windows"}

    n = largest(make, LONG_LIMIT_MB)
    env = {"E5_MAX_REQUEST_MB": str(LONG_LIMIT_MB), "MALLOC_ARENA_MAX": "2"}
    with CogServer(checkpoint_dir, concurrency=1, env=env, log_path=tmp_path / "server.log") as server:
        assert server.wait_until() == "READY"
        server.predict(inputs(make(2)))
        worker = child_pids(server.proc.pid)[0]
        result = measure(server, worker, make(n))
        assert result["status"] == "succeeded", result
        rise = sum(result[p]["peak_mb"] - result[p]["before_mb"] for p in ("server", "worker")) * 2**20 / 1e6
        print(f"long texts, windows: n={n}, server + worker rose {rise:.0f} MB (limit {LONG_LIMIT_MB} MB)", result)
        assert 0 < rise < LONG_LIMIT_MB, result
        refused = measure(server, worker, make(n + 1))
        assert refused["status"] == "failed" and "(E5_MAX_REQUEST_MB)" in refused["error"], refused

