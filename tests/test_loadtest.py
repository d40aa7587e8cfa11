"""A short run of benchmarks/loadtest.py against the real server at the image's 32 slots: nothing lost, nothing wrong."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import loadtest


def args(**overrides):
    base = dict(requests=60, clients=4, rounds=5, levels="1,4", per_level=8, repeat=1, slots=32, invalid_share=0.25, warmup=2,
                time_limit=120, full_size=False, weights=None, seed=3, json=None)
    return argparse.Namespace(**{**base, **overrides})


def test_mixed_traffic_answers_everything_correctly(checkpoint_dir, tmp_path):
    report = loadtest.run_mixed(args(), checkpoint_dir, tmp_path / "server.log")
    assert report["requests"] == 60
    assert (report["failures"], report["wrong"], report["lost"]) == (0, 0, 0), report["examples"]
    assert report["expected_errors"] > 0 and report["ok"] > 0
    assert report["ok"] + report["expected_errors"] + report["busy_409"] == 60
    assert report["status_after"] == "READY"


def test_concurrency_mode_checks_every_answer(checkpoint_dir, tmp_path):
    report = loadtest.run_concurrency(args(repeat=2), checkpoint_dir, tmp_path / "server.log")
    check = report["check"]
    assert (check["failures"], check["wrong"], check["lost"]) == (0, 0, 0), check["examples"]
    assert check["ok"] == 32  # two repeats of 8 + 8; a 409 is retried, so every request ends answered
    level = report["levels"][4]
    assert level["mean_texts_per_forward"] >= 1.0
    # each repeat's ratio is against its own C=1, and the level reports their median
    ratios = [run[4]["requests_per_s"] / run[1]["requests_per_s"] for run in report["repeats"]]
    assert level["speedups_vs_first"] == pytest.approx(ratios)
    assert level["speedup_vs_first"] == pytest.approx(sum(ratios) / 2)
    assert report["levels"][1]["speedups_vs_first"] == [1.0, 1.0]
    # the server's page faults: counted from its processes' /proc entries, so a dead pid would read 0
    faults = [run[c]["page_faults_per_request"] for run in report["repeats"] for c in (1, 4)]
    assert min(faults) >= 0 and sum(faults) > 0


def test_burst_mode_counts_each_answer_once(checkpoint_dir, tmp_path):
    report = loadtest.run_burst(args(clients=3, rounds=4), checkpoint_dir, tmp_path / "server.log")
    assert (report["failures"], report["wrong"], report["lost"]) == (0, 0, 0), report["examples"]
    assert report["ok"] + report["busy_409"] == report["requests"] == 12
    assert report["status_after"] == "READY"


class ScriptedServer:
    """Answers /predictions with the statuses it is given, in order, and counts the calls."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.calls = 0

    def post(self, path, body, timeout=300.0):
        self.calls += 1
        status = self.statuses.pop(0)
        return status, ({"status": "succeeded"} if status == 200 else {"error": "At capacity"})


def test_a_409_is_retried_until_answered():
    server = ScriptedServer([409, 409, 200])
    r = loadtest.send_retrying_busy(server, {"texts": ["a"]}, retries=5, pause_s=(0.001, 0.002))
    assert (r["status"], r["busy_retries"], server.calls) == (200, 2, 3)


def test_retries_stop_at_the_limit_and_other_errors_are_not_retried():
    server = ScriptedServer([409] * 3)
    r = loadtest.send_retrying_busy(server, {"texts": ["a"]}, retries=2, pause_s=(0.001, 0.002))
    assert (r["status"], r["busy_retries"], server.calls) == (409, 2, 3)
    server = ScriptedServer([422, 200])
    r = loadtest.send_retrying_busy(server, {"texts": ["a"]}, retries=2, pause_s=(0.001, 0.002))
    assert (r["status"], r["busy_retries"], server.calls) == (422, 0, 1)
