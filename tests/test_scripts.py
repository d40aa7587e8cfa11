"""The measuring helpers of scripts/benchmark.py and scripts/bulk_run.py report what they claim to."""

from __future__ import annotations

import pytest

import benchmark
import bulk_run


def test_quarter_peaks_takes_the_highest_sample_of_each_quarter():
    assert bulk_run.quarter_peaks([1, 5, 2, 3, 9, 1, 1, 4]) == [5, 3, 9, 4]
    # a rising series shows as rising quarters: the shape a leak would have
    assert bulk_run.quarter_peaks(list(range(100))) == [24, 49, 74, 99]
    assert bulk_run.quarter_peaks([7.0]) == [7.0, 7.0, 7.0, 7.0]
    assert bulk_run.quarter_peaks([]) == [0.0, 0.0, 0.0, 0.0]


def test_time_breakdown_splits_the_forward_into_gemms_attention_and_the_rest(predictor):
    embedder = predictor.embedder
    texts = benchmark.mixed_corpus(12)
    calls_before = embedder.forward_calls
    b = benchmark.time_breakdown(embedder, texts, embedder.model.config)
    assert embedder.forward_calls > calls_before  # it profiled real forwards
    assert b["gemm_share"] + b["attention_share"] + b["other_share"] == pytest.approx(1.0)
    # the dense layers are most of an encoder's work; attention ran through SDPA and was seen
    assert 0.3 < b["gemm_share"] < 1.0
    assert b["attention_share"] > 0.0
    assert b["gemm_flops"] > 1e8


def test_paired_mfu_holds_each_round_against_the_better_measurement_around_it(monkeypatch):
    rates = iter([1e9, 3e9, 2e9, 4e9])  # before round 1, then after each of the three rounds
    monkeypatch.setattr(benchmark, "matmul_flops", lambda device, dtype: next(rates))

    class Contender:
        texts_seen = 0

        def embed(self, texts):
            self.texts_seen += len(texts)

    contender = Contender()
    p = benchmark.paired_mfu(contender, ["a", "b"], useful=1e6, device="cpu", dtype=None, rounds=3)
    assert contender.texts_seen == 6
    rounds = p["rounds"]
    assert [(r["matmul_before"], r["matmul_after"]) for r in rounds] == [(1e9, 3e9), (3e9, 2e9), (2e9, 4e9)]
    for r, best in zip(rounds, (3e9, 3e9, 4e9)):
        assert r["mfu"] == pytest.approx(1e6 / r["seconds"] / best)
    assert p["median_mfu"] == sorted(r["mfu"] for r in rounds)[1]
