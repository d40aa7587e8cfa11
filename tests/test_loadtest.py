"""A short run of scripts/loadtest.py against the real server: nothing lost, nothing wrong."""

from __future__ import annotations

import argparse

import loadtest


def args(**overrides):
    base = dict(requests=60, clients=4, levels="1,4", per_level=8, slots=8, invalid_share=0.25, warmup=2,
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
    report = loadtest.run_concurrency(args(), checkpoint_dir, tmp_path / "server.log")
    check = report["check"]
    assert (check["failures"], check["wrong"], check["lost"]) == (0, 0, 0), check["examples"]
    assert check["ok"] + check["busy_409"] == 16
    assert report["levels"][4]["mean_texts_per_forward"] >= 1.0
