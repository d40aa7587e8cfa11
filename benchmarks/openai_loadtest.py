"""The OpenAI-compatible server against the Cog server: the same closed-loop load, the same machine.

    python -m benchmarks.openai_loadtest [--levels 1,4,16] [--per-level 32] [--repeat 4] [--full-size] [--json PATH]

Cog's server (`python -m cog.server.http` with the image's schema) and `python -m openai_api`, both started
on the same generated checkpoint, take the same load in alternating blocks: C clients each sending single
short queries (benchmarks/loadtest.py's `concurrency` workload and closed loop; 409 and 429 retried alike),
for each C in --levels. Every answer of both is checked against the engine run directly. Reports requests/s
and latency per server and level (medians over repeats), the OpenAI server's requests/s as a ratio of Cog's
in back-to-back blocks, and each server's resident memory at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from benchmarks import loadtest
from testkit.cog_server import CogServer
from testkit.openai_server import OpenAIServer


class OpenAIAsCog:
    """The OpenAI server behind the loadtest's Cog-shaped calls: `{"input": {"texts": [...]}}` in, a succeeded
    prediction out, 429 read as Cog's 409 (both mean: retry after a pause). So one closed loop, one retry
    policy and one answer check serve both servers."""

    def __init__(self, server: OpenAIServer):
        self.server, self.proc = server, server.proc

    def post(self, path: str, body: bytes, timeout: float = 300.0) -> tuple[int, dict]:
        inputs = json.loads(body)["input"]
        request = {"input": inputs["texts"], "encoding_format": "float", "input_type": inputs.get("input_type", "query")}
        req = urllib.request.Request(self.server.url + "/v1/embeddings", data=json.dumps(request).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as err:
            return (409 if err.code == 429 else err.code), {"status": "failed", "error": err.read().decode()}
        embeddings = [d["embedding"] for d in answer["data"]]
        return 200, {"status": "succeeded", "output": {"embeddings": embeddings}, "metrics": {}}


def started(kind: str, args, weights: Path, log_dir: Path):
    """(the server, what the closed loop posts to) for "cog" or "openai", ready and warmed with 3 queries."""
    if kind == "cog":
        server = CogServer(weights, concurrency=args.slots, log_path=log_dir / "cog.log").__enter__()
        assert server.wait_until() == "READY", "the Cog server did not become ready"
        target = server
    else:
        server = OpenAIServer(weights, env={"E5_API_MAX_REQUESTS": str(args.slots)}, log_path=log_dir / "openai.log").__enter__()
        server.wait_until_ready()
        target = OpenAIAsCog(server)
    for i in range(3):
        loadtest.send(target, {"texts": [f"warm-up query {i}"]})
    return server, target


def run_compare(args, weights: Path, log_dir: Path) -> dict:
    """Both servers up at once (the idle one waits on its socket), the load sent to one at a time in blocks:
    for each repeat and level, a block of --per-level queries to each, the order flipped every repeat
    (Cog then OpenAI, then OpenAI then Cog). A shared machine's speed drifts by more than the difference
    measured, so each ratio compares two blocks run back to back; the report gives the median ratio."""
    rng = random.Random(args.seed)
    levels = [int(c) for c in args.levels.split(",")]
    servers, targets = {}, {}
    try:
        for kind in ("cog", "openai"):
            servers[kind], targets[kind] = started(kind, args, weights, log_dir)
        runs: dict[str, list[dict]] = {"cog": [], "openai": []}
        for repeat in range(args.repeat):
            run = {"cog": {}, "openai": {}}
            for c in levels:
                queries = [{"texts": [loadtest.random_text(rng, 8)]} for _ in range(max(args.per_level, c))]
                for kind in (("cog", "openai") if repeat % 2 == 0 else ("openai", "cog")):
                    run[kind][c] = row = loadtest.closed_loop(targets[kind], c, list(queries), args.time_limit)
                    print(f"repeat {repeat + 1}: {kind:6s} C={c:3d}: {row['requests_per_s']:.2f} req/s, "
                          f"p50 {row.get('p50_ms', 0):.0f} ms, p99 {row.get('p99_ms', 0):.0f} ms, "
                          f"{row['busy_409_retried']} retried", flush=True)
            for kind in run:
                for c in levels:
                    run[kind][c]["speedup_vs_first"] = run[kind][c]["requests_per_s"] / run[kind][levels[0]]["requests_per_s"]
                runs[kind].append(run[kind])
        rss = {kind: loadtest.tree_rss_mb(server.proc.pid) for kind, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    results = [r for kind in runs for run in runs[kind] for row in run.values() for r in row.pop("_results")]
    report = {"levels": levels, "repeats": args.repeat, "check": loadtest.check(results, weights), "rss_mb_at_end": rss}
    for kind in runs:
        report[kind] = {c: loadtest.summarize_level([run[c] for run in runs[kind]]) for c in levels}
    ratios = {c: [o[c]["requests_per_s"] / g[c]["requests_per_s"] for o, g in zip(runs["openai"], runs["cog"])] for c in levels}
    report["openai_vs_cog_requests_per_s"] = {c: {"median": statistics.median(r), "repeats": r} for c, r in ratios.items()}
    for c in levels:
        print(f"C={c}: cog {report['cog'][c]['requests_per_s']:.2f} req/s (p99 {report['cog'][c]['p99_ms']:.0f} ms), "
              f"openai {report['openai'][c]['requests_per_s']:.2f} req/s (p99 {report['openai'][c]['p99_ms']:.0f} ms); "
              f"openai/cog median {statistics.median(ratios[c]):.2f} (repeats {', '.join(f'{x:.2f}' for x in ratios[c])})",
              flush=True)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--per-level", type=int, default=32, help="requests per block (at least C)")
    parser.add_argument("--repeat", type=int, default=4, help="blocks per server and level, the order flipped each time")
    parser.add_argument("--slots", type=int, default=32, help="COG_MAX_CONCURRENCY and E5_API_MAX_REQUESTS")
    parser.add_argument("--time-limit", type=float, default=900, help="seconds per level before traffic stops")
    parser.add_argument("--full-size", action="store_true", help="24 x 1024 random-weight model (slow on CPU)")
    parser.add_argument("--weights", type=Path, help="use this checkpoint instead of a generated one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)

    weights = args.weights or loadtest.checkpoint(args.full_size)
    log_dir = Path(tempfile.mkdtemp(prefix="e5-openai-loadtest-"))
    report = {"command": " ".join(["python -m benchmarks.openai_loadtest", *(argv if argv is not None else sys.argv[1:])]),
              "weights": "full-size" if args.full_size else ("given" if args.weights else "tiny"),
              **run_compare(args, weights, log_dir), "server_logs": str(log_dir)}
    print(json.dumps(report, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    verdict = report["check"]
    return 1 if verdict["failures"] + verdict["wrong"] + verdict["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
