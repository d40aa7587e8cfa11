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
