"""Load on the real Cog server: every answer checked, nothing lost, memory watched.

    python -m benchmarks.loadtest mixed [--requests 2000] [--clients 8]
    python -m benchmarks.loadtest concurrency [--levels 1,4,16,64] [--per-level 64] [--repeat 1] [--full-size]
    python -m benchmarks.loadtest burst [--clients 8] [--rounds 300]
    python -m benchmarks.loadtest output [--texts 2048]
    python -m benchmarks.loadtest fairness [--big-texts 4000] [--big-kind request|file] [--queries 40]

Starts `python -m cog.server.http` on 127.0.0.1 with a generated checkpoint (the 2-layer test model, or
with --full-size the real architecture with random weights), sends bounded traffic (a request cap and a time
cap), and afterwards recomputes every distinct valid input directly with the engine to check each answer.

mixed:       valid and invalid requests (empty strings, non-strings, bad options, odd JSON), first one
             at a time, then from --clients threads (retrying a 409, as any client should). Reports
             failures (a valid request that failed, or an invalid one that did not fail with a named
             input), wrong answers, 409s, latency percentiles and the server's resident memory after
             warm-up, at the end, and after 3 s idle (past the batcher's trim).
concurrency: C clients each sending single short queries, for each C in --levels. Reports requests/s,
             latency p50/p99, mean texts per forward (from the responses' metrics), the server's page
             faults per request (pages its processes touched for the first time) and 409s (retried after
             a pause that doubles from 10 ms to 0.5 s; latency includes the retries). With --repeat N the
             levels run N times in turn and the report gives medians, each repeat's ratios against its
             own first level.
burst:       --clients requests released at the same instant, --rounds times, with free slots: counts the
             409s the server answers although no slot is short (no retries here).
output:      one request of --texts short texts per encoding_format: where the time goes between the
             predictor's own work (tokenize, forward, encode) and the server turning the output into JSON.
fairness:    single queries (one client) while one large request of --big-texts texts, or a texts_file job
             of them (--big-kind file), or --big-texts texts of ~1,500 words each embedded whole with
             `long_texts` mean (--big-kind long: windows of 512 tokens), runs: their latency against the same
             queries alone, and the large one's time against it alone. Every query's answer is checked.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from testkit.cog_server import CogServer  # noqa: E402
from testkit.synthetic_checkpoint import FULL_SIZE, SEED_WORDS, write_checkpoint  # noqa: E402

CACHE = Path.home() / ".cache" / "e5-cog"
TASK = "Given a web search query, retrieve relevant passages that answer the query"
TOLERANCE = 1e-5


def checkpoint(full_size: bool) -> Path:
    path = CACHE / ("full-size-xlmr" if full_size else "tiny")
    if not (path / "model.safetensors").is_file():
        write_checkpoint(path, **(FULL_SIZE if full_size else {}))
    return path


# --- traffic --------------------------------------------------------------------------------------------


def random_text(rng: random.Random, max_words: int = 60) -> str:
    return " ".join(rng.choice(SEED_WORDS) for _ in range(rng.randint(1, max_words)))


# (inputs, what the answer must say). The server checks types and choices against the image's schema first
# (422, its `detail` read as "field: message"); what a schema cannot say fails the prediction with our message.
INVALID = [
    ({"texts": []}, "`texts` is required"),  # [] means none, as a ticked, untouched form box sends it
    ({"texts": ["ok", ""]}, "`texts[1]` is empty"),
    ({"texts": ["ok", 3]}, 'texts/1: 3 is not of type "string"'),
    ({"texts": [None]}, 'texts/0: null is not of type "string"'),
    ({"texts": [["nested"]]}, "texts/0: [\"nested\"] is not of type"),
    ({"texts": 42}, 'texts: 42 is not of type "array"'),
    ({"texts": "a bare string"}, 'texts: "a bare string" is not of type "array"'),
    ({"texts": ["ok"], "input_type": "passage"}, 'input_type: "passage" is not one of'),
    ({"texts": ["ok"], "task": "   "}, "`task` is empty"),
    # A lone surrogate is refused by the server's JSON parser (400) before the predictor sees it.
    ({"texts": ["ok \ud800"]}, "input.texts[0]"),
    ({}, "`texts` is required"),
]


def make_request(rng: random.Random, invalid_share: float) -> tuple[dict, str | None]:
    if rng.random() < invalid_share:
        return rng.choice(INVALID)
    inputs = {"texts": [random_text(rng) for _ in range(rng.randint(1, 8))], "input_type": rng.choice(["query", "document"])}
    return inputs, None


def error_text(status: int, body: dict) -> str:
    """What an answer says went wrong: our message, the schema's 422 details, or the server's 400."""
    if status == 422:
        return "; ".join(f"{d['loc'][-1]}: {d['msg']}" for d in body.get("detail", []))
    if status == 400 or body.get("status") == "failed":
        return body.get("error") or body.get("raw") or ""
    return ""


def send(server: CogServer, inputs: dict) -> dict:
    start = time.perf_counter()
    body = json.dumps({"input": inputs}, ensure_ascii=True).encode()
    try:
        status, response = server.post("/predictions", body, timeout=600)
    except Exception as err:  # a dropped connection is a lost request, counted as such
        return {"inputs": inputs, "status": None, "error": f"{type(err).__name__}: {err}", "seconds": time.perf_counter() - start}
    return {"inputs": inputs, "status": status, "body": response, "seconds": time.perf_counter() - start}


BUSY_RETRIES = 30
BUSY_PAUSE_S = (0.01, 0.5)  # the first pause after a 409, doubling up to the second


def send_retrying_busy(server: CogServer, inputs: dict, retries: int = BUSY_RETRIES, pause_s: tuple[float, float] = BUSY_PAUSE_S) -> dict:
    """`send`, retrying a 409 after a growing pause, as a client of the server should.

    Cog's server answers 409 when every slot is busy, but also, now and then, when two requests arrive at
    the same instant with slots free (see `burst` and docs/reliability.md). The latency covers every attempt;
    `busy_retries` counts the retries that 409s caused.
    """
    start = time.perf_counter()
    for attempt in range(retries + 1):
        result = send(server, inputs)
        if result["status"] != 409:
            break
        if attempt < retries:
            time.sleep(min(pause_s[0] * 2**attempt, pause_s[1]))
    return {**result, "seconds": time.perf_counter() - start, "busy_retries": attempt}


# --- checking -------------------------------------------------------------------------------------------


def formatted(inputs: dict) -> list[str]:
    if inputs.get("input_type", "query") == "document":
        return inputs["texts"]
    return [f"Instruct: {TASK}\nQuery: {t}" for t in inputs["texts"]]


def check(results: list[dict], weights: Path) -> dict:
    """Recompute every distinct valid text directly, then compare each answer."""
    from e5 import Embedder

    embedder = Embedder.load(weights, device="cpu")
    distinct = sorted({t for r in results if r.get("expect") is None and r["status"] == 200 for t in formatted(r["inputs"])})
    expected = dict(zip(distinct, embedder.embed_texts(distinct))) if distinct else {}
    counts = {"requests": len(results), "ok": 0, "expected_errors": 0, "failures": 0, "wrong": 0, "busy_409": 0, "lost": 0}
    examples = []
    for r in results:
        if r["status"] is None:
            counts["lost"] += 1
            examples.append(r["error"])
            continue
        if r["status"] == 409:
            counts["busy_409"] += 1
            continue
        body = r["body"]
        if r.get("expect") is not None:
            if r["expect"] in error_text(r["status"], body):
                counts["expected_errors"] += 1
            else:
                counts["failures"] += 1
                examples.append(f"expected error {r['expect']!r}, got {str(body)[:200]}")
            continue
        if body.get("status") != "succeeded":
            counts["failures"] += 1
            examples.append(str(body)[:300])
            continue
        got = np.asarray(body["output"]["embeddings"], dtype=np.float32)
        want = np.stack([expected[t] for t in formatted(r["inputs"])])
        if got.shape != want.shape or np.abs(got - want).max() > TOLERANCE:
            counts["wrong"] += 1
            examples.append(f"wrong vectors for a request of {len(want)} texts")
        else:
            counts["ok"] += 1
    counts["examples"] = examples[:5]
    return counts


def latency_summary(results: list[dict]) -> dict:
    times = sorted(r["seconds"] for r in results if r["status"] == 200)
    if not times:
        return {}
    pick = lambda q: times[min(len(times) - 1, int(q * (len(times) - 1)))]  # noqa: E731
    return {"p50_ms": 1000 * pick(0.5), "p90_ms": 1000 * pick(0.9), "p99_ms": 1000 * pick(0.99), "max_ms": 1000 * times[-1]}


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (the server and its Python worker)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, stack = [], [pid]
    while stack:
        p = stack.pop()
        tree.append(p)
        stack.extend(children.get(p, []))
    return tree


def tree_rss_mb(pid: int) -> float:
    """Resident memory of the server and its worker."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def tree_minor_faults(pid: int) -> int:
    """Pages the server and its worker touched for the first time (minflt in /proc/<pid>/stat), so far."""
    total = 0
    for p in process_tree(pid):
        try:
            total += int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[7])
        except (OSError, IndexError, ValueError):
            pass
    return total


# --- modes ----------------------------------------------------------------------------------------------


def run_mixed(args, weights: Path, log_path: Path) -> dict:
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.time_limit
    with CogServer(weights, concurrency=args.slots, log_path=log_path) as server:
        assert server.wait_until() == "READY", "server did not become ready"
        for _ in range(args.warmup):
            send(server, make_request(rng, 0.0)[0])
        rss_start = tree_rss_mb(server.proc.pid)
        results = []
        half = args.requests // 2
        for _ in range(half):  # one at a time
            if time.monotonic() > deadline:
                break
            inputs, expect = make_request(rng, args.invalid_share)
            results.append({**send(server, inputs), "expect": expect})
        planned = [make_request(rng, args.invalid_share) for _ in range(args.requests - half)]

        def one(item):
            if time.monotonic() > deadline:
                return None
            inputs, expect = item
            return {**send_retrying_busy(server, inputs), "expect": expect}

        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results += [r for r in pool.map(one, planned) if r is not None]
        concurrent_seconds = time.perf_counter() - started
        rss_end = tree_rss_mb(server.proc.pid)
        time.sleep(3)  # idle past the batcher's trim (1 s): what the server keeps between bursts
        rss_idle = tree_rss_mb(server.proc.pid)
        ready_after = server.status()
    report = check(results, weights)
    report.update(latency_summary(results))
    report["busy_409_retried"] = sum(r.get("busy_retries", 0) for r in results)
    report.update({"rss_mb_after_warmup": rss_start, "rss_mb_end": rss_end, "rss_growth_mb": rss_end - rss_start,
                   "rss_mb_after_3s_idle": rss_idle, "rss_growth_after_idle_mb": rss_idle - rss_start,
                   "status_after": ready_after, "concurrent_phase_seconds": concurrent_seconds})
    return report


def closed_loop(server: CogServer, clients: int, queries: list[dict], time_limit: float) -> dict:
    """`clients` threads, each sending its next query as soon as the last one is answered, until none is left."""
    deadline = time.monotonic() + time_limit
    lock = threading.Lock()
    todo = list(queries)
    results: list[dict] = []

    def client():
        while time.monotonic() < deadline:
            with lock:
                if not todo:
                    return
                inputs = todo.pop()
            r = {**send_retrying_busy(server, inputs), "expect": None}
            with lock:
                results.append(r)

    faults = tree_minor_faults(server.proc.pid)
    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    faults = tree_minor_faults(server.proc.pid) - faults
    answered = [r for r in results if r["status"] == 200]
    per_forward = [r["body"]["metrics"].get("texts_per_forward", 1) for r in answered if r["body"].get("status") == "succeeded"]
    row = latency_summary(results)
    row.update({"clients": clients, "requests": len(results), "seconds": seconds, "requests_per_s": len(answered) / seconds,
                "mean_texts_per_forward": statistics.fmean(per_forward) if per_forward else 0.0,
                "page_faults_per_request": faults / max(1, len(answered)),
                "busy_409": sum(r["status"] == 409 for r in results),
                "busy_409_retried": sum(r["busy_retries"] for r in results), "_results": results})
    return row


def run_concurrency(args, weights: Path, log_path: Path) -> dict:
    """Each level in turn, the whole sequence --repeat times: each repeat's speedups are against its own
    first level, measured minutes apart at most, and the report gives their median (a shared machine's
    speed drifts by more than the differences measured here)."""
    rng = random.Random(args.seed)
    levels = [int(c) for c in args.levels.split(",")]
    runs: list[dict[int, dict]] = []
    with CogServer(weights, concurrency=args.slots, log_path=log_path) as server:
        assert server.wait_until() == "READY", "server did not become ready"
        for _ in range(3):
            send(server, {"texts": [random_text(rng, 8)]})
        for repeat in range(args.repeat):
            run: dict[int, dict] = {}
            for c in levels:
                queries = [{"texts": [random_text(rng, 8)]} for _ in range(max(args.per_level, c))]
                run[c] = row = closed_loop(server, c, queries, args.time_limit)
                row["speedup_vs_first"] = row["requests_per_s"] / run[levels[0]]["requests_per_s"]
                row["p99_vs_first_p50"] = row.get("p99_ms", 0) / run[levels[0]]["p50_ms"] if run[levels[0]].get("p50_ms") else None
                print(f"{'' if args.repeat == 1 else f'repeat {repeat + 1}: '}C={c:3d}: {row['requests_per_s']:.2f} req/s "
                      f"({row['speedup_vs_first']:.2f}x C={levels[0]}), p50 {row.get('p50_ms', 0):.0f} ms, "
                      f"p99 {row.get('p99_ms', 0):.0f} ms, {row['mean_texts_per_forward']:.1f} texts/forward, "
                      f"{row['page_faults_per_request']:,.0f} page faults/request, "
                      f"{row['busy_409_retried']} x 409 retried, {row['busy_409']} unanswered", flush=True)
            runs.append(run)
    everything = [r for run in runs for row in run.values() for r in row.pop("_results")]
    verdict = check(everything, weights)
    out = {c: summarize_level([run[c] for run in runs]) for c in levels}
    if args.repeat > 1:
        print("medians over repeats: " + ", ".join(f"C={c} {row['requests_per_s']:.2f} req/s ({row['speedup_vs_first']:.2f}x, "
                                                    f"repeats {', '.join(f'{x:.2f}' for x in row['speedups_vs_first'])})"
                                                    for c, row in out.items()), flush=True)
    return {"levels": out, "repeats": runs, "check": verdict}


def summarize_level(rows: list[dict]) -> dict:
    """One level over its repeats: medians of the rates, ratios and latencies; counts added up."""
    def median(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return statistics.median(values) if values else None

    out = {key: median(key) for key in ("requests_per_s", "speedup_vs_first", "p50_ms", "p90_ms", "p99_ms", "max_ms",
                                         "p99_vs_first_p50", "mean_texts_per_forward", "page_faults_per_request", "seconds")}
    out.update({"clients": rows[0]["clients"], "repeats": len(rows), "speedups_vs_first": [r["speedup_vs_first"] for r in rows],
                "requests": sum(r["requests"] for r in rows), "busy_409": sum(r["busy_409"] for r in rows),
                "busy_409_retried": sum(r["busy_409_retried"] for r in rows)})
    return out


def run_burst(args, weights: Path, log_path: Path) -> dict:
    """--clients requests released at the same instant, --rounds times, never more in flight than slots.

    Each answer is a 200 or a 409 sent back without a retry, so the 409s counted here are ones the server
    gave with slots free: Cog's server takes a slot with a non-blocking try-lock on its pool, which fails
    when another request holds that lock at the same moment.
    """
    rng = random.Random(args.seed)
    assert args.clients <= args.slots, "burst measures 409s with free slots: --clients must not exceed --slots"
    with CogServer(weights, concurrency=args.slots, log_path=log_path) as server:
        assert server.wait_until() == "READY", "server did not become ready"
        send(server, {"texts": [random_text(rng, 8)]})
        plans = [[{"texts": [random_text(rng, 8)]} for _ in range(args.rounds)] for _ in range(args.clients)]
        barrier = threading.Barrier(args.clients)
        lock = threading.Lock()
        results: list[dict] = []

        def client(plan: list[dict]) -> None:
            for inputs in plan:
                barrier.wait()
                r = {**send(server, inputs), "expect": None}
                with lock:
                    results.append(r)

        threads = [threading.Thread(target=client, args=(plan,)) for plan in plans]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        status_after = server.status()
    report = check(results, weights)
    report.update({"clients": args.clients, "rounds": args.rounds, "slots": args.slots, "status_after": status_after,
                   "busy_409_share": report["busy_409"] / len(results)})
    print(f"{args.clients} requests at once x {args.rounds} rounds, {args.slots} slots: {report['ok']} answered, "
          f"{report['busy_409']} x 409 ({report['busy_409_share']:.1%})", flush=True)
    return report


def run_output(args, weights: Path, log_path: Path) -> dict:
    rng = random.Random(args.seed)
    texts = [random_text(rng, 8) for _ in range(args.texts)]
    out = {}
    with CogServer(weights, concurrency=1, log_path=log_path) as server:
        assert server.wait_until() == "READY", "server did not become ready"
        for fmt in ("float", "base64", "int8", "binary"):
            for _ in range(2):  # the second run is reported: the first pays for warm-up
                start = time.perf_counter()
                body = json.dumps({"input": {"texts": texts, "input_type": "document", "encoding_format": fmt}}).encode()
                status, response = server.post("/predictions", body, timeout=900)
                wall = time.perf_counter() - start
            m = response["metrics"]
            own = sum(m["seconds"].values()) - m["seconds"].get("queue_and_forward", 0)
            out[fmt] = {"wall_s": wall, "predict_time_s": m["predict_time"], "predictor_s": own,
                        "forward_s": m["seconds"]["forward"], "encode_s": m["seconds"]["encode"],
                        "server_output_s": m["predict_time"] - own, "response_mb": len(json.dumps(response)) / 1e6}
            print(f"{fmt:7s} wall {wall:6.2f}s  predictor {own:6.2f}s (forward {m['seconds']['forward']:.2f}s)  "
                  f"server output {m['predict_time'] - own:6.2f}s  response {out[fmt]['response_mb']:.1f} MB", flush=True)
    return out


def big_inputs(args, rng: random.Random) -> dict:
    """The large request: --big-texts documents of 1 to 120 words, as JSON texts or as an uploaded .txt file."""
    if args.big_kind == "long":  # texts past 512 tokens, each embedded whole in windows
        return {"texts": [" ".join(random_text(rng, 120) for _ in range(25)) for _ in range(args.big_texts)],
                "input_type": "document", "long_texts": "mean"}
    texts = [random_text(rng, 120) for _ in range(args.big_texts)]
    if args.big_kind == "file":  # a bulk job, sent as Cog's CLI sends a file: a data URL
        data = base64.b64encode(("\n".join(texts) + "\n").encode()).decode()
        return {"texts_file": f"data:text/plain;base64,{data}", "input_type": "document"}
    return {"texts": texts, "input_type": "document"}


def timed_big_request(server: CogServer, inputs: dict) -> dict:
    result = send(server, inputs)
    if result["status"] != 200 or result["body"].get("status") != "succeeded":
        raise RuntimeError(f"the large request failed: {str(result.get('body') or result.get('error'))[:300]}")
    return result


def run_fairness(args, weights: Path, log_path: Path) -> dict:
    """Single queries while one large request (or a bulk file job) runs, against the same queries alone.

    Phases, in one server: the queries alone (one client, each sent as soon as the last is answered); the
    large request alone; then the large request again with the same client sending queries while it runs.
    Reports the queries' latency in both settings and the large request's time in both.
    """
    rng = random.Random(args.seed)
    big = big_inputs(args, rng)
    queries = [{"texts": [random_text(rng, 12)], "input_type": "query"} for _ in range(args.queries)]
    with CogServer(weights, concurrency=args.slots, log_path=log_path) as server:
        assert server.wait_until() == "READY", "server did not become ready"
        for q in queries[: args.warmup]:
            send(server, q)
        alone = [{**send(server, q), "expect": None} for q in queries]
        big_alone = timed_big_request(server, big)["seconds"]
        during: list[dict] = []
        big_result: dict = {}
        runner = threading.Thread(target=lambda: big_result.update(timed_big_request(server, big)))
        runner.start()
        time.sleep(args.big_head_start)  # the large request is queued and running
        for q in queries:
            if not runner.is_alive():
                break
            during.append({**send(server, q), "expect": None})
        runner.join()
    metrics = big_result["body"]["metrics"]
    forwards = round(metrics.get("windows", metrics["texts"]) / metrics["texts_per_forward"])
    mean_forward_s = metrics["seconds"]["forward"] / forwards
    report = {
        "big_kind": args.big_kind, "big_texts": args.big_texts,
        "big_alone_s": big_alone, "big_with_queries_s": big_result["seconds"],
        "big_slowdown": big_result["seconds"] / big_alone,
        "big_forwards": forwards, "big_mean_forward_s": mean_forward_s,
        "queries_alone": {"n": len(alone), **latency_summary(alone)},
        "queries_during_big": {"n": len(during), **latency_summary(during)},
        "check": check(alone + during, weights),
    }
    a, d = report["queries_alone"], report["queries_during_big"]
    in_forwards = {k: d[k] / 1000 / mean_forward_s for k in ("p50_ms", "p90_ms", "max_ms") if k in d}
    report["queries_during_big_in_forwards"] = in_forwards
    print(f"queries alone: p50 {a['p50_ms']:.0f} ms, max {a['max_ms']:.0f} ms; during the large {args.big_kind} "
          f"({d['n']} queries): p50 {d.get('p50_ms', float('nan')):.0f} ms, p90 {d.get('p90_ms', float('nan')):.0f} ms, "
          f"max {d.get('max_ms', float('nan')):.0f} ms = {in_forwards.get('max_ms', float('nan')):.1f} of its forwards "
          f"({mean_forward_s:.2f} s each, {forwards} in all); large {args.big_kind}: {big_alone:.1f} s alone, "
          f"{big_result['seconds']:.1f} s with the queries", flush=True)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["mixed", "concurrency", "burst", "output", "fairness"])
    parser.add_argument("--texts", type=int, default=2048, help="texts in the output-mode request")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=300, help="burst: times the clients send at once")
    parser.add_argument("--levels", default="1,4,16,64")
    parser.add_argument("--per-level", type=int, default=64, help="requests per concurrency level (at least C)")
    parser.add_argument("--repeat", type=int, default=1, help="concurrency: run the levels this many times, report medians")
    parser.add_argument("--slots", type=int, default=32, help="COG_MAX_CONCURRENCY for the server")
    parser.add_argument("--invalid-share", type=float, default=0.2)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=900, help="seconds per phase before traffic stops")
    parser.add_argument("--full-size", action="store_true", help="24 x 1024 random-weight model (slow on CPU)")
    parser.add_argument("--weights", type=Path, help="use this checkpoint instead of a generated one")
    parser.add_argument("--big-texts", type=int, default=4000, help="fairness: texts in the large request")
    parser.add_argument("--big-kind", choices=["request", "file", "long"], default="request",
                        help="fairness: the large one is a JSON request, a texts_file bulk job, or long texts")
    parser.add_argument("--big-head-start", type=float, default=1.0, help="fairness: seconds before the queries")
    parser.add_argument("--queries", type=int, default=40, help="fairness: single queries per phase")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)

    weights = args.weights or checkpoint(args.full_size)
    log_path = Path(tempfile.mkdtemp(prefix="e5-loadtest-")) / "server.log"
    run = {"mixed": run_mixed, "concurrency": run_concurrency, "burst": run_burst, "output": run_output,
           "fairness": run_fairness}[args.mode]
    report = run(args, weights, log_path)
    report["server_log"] = str(log_path)
    print(json.dumps(report, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if args.mode == "output":
        return 0
    verdict = report["check"] if args.mode in ("concurrency", "fairness") else report
    bad = verdict["failures"] + verdict["wrong"] + verdict["lost"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
