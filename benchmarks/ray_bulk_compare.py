"""The cost of going through Ray: the same short texts through predict()'s `texts_file` and through
scripts/ray_embed.py with one actor, alternated (A, B, A, B, ...) so that the machine's drift cancels.

    python -m benchmarks.ray_bulk_compare [--texts 100000] [--rounds 2] [--weights DIR] [--json FILE]

Each run is a fresh process on one text file (N lines of 2-8 words, as benchmarks/bulk_run.py writes them),
embedded as documents, with the 2-layer generated test checkpoint unless --weights is given.
  A  predict(): setup and a 10-text warm-up, then the timed `texts_file` call (the vectors go to a .npy).
  B  `python scripts/ray_embed.py FILE --actors 1 --threads-per-actor T`: a local Ray, then the timed job
     (the actor's start and weights load included; Parquet out). T is the machine's CPU count, the threads
     torch takes in A.
Throughput is texts over the timed part. Memory is sampled every 0.5 s over each run's whole process tree
(for B: the driver, Ray's daemons, its workers and the actor): the peak of the tree's summed PSS (shared pages
split between the processes that map them, so Ray's object store counts once), and the engine process's
peak resident memory (A: the process; B: the actor). Load averages and the busiest other processes are
recorded before each run: other work on the machine shows there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from benchmarks.bulk_run import PeriodicSampler, write_texts  # noqa: E402
from testkit.synthetic_checkpoint import write_checkpoint  # noqa: E402

RAY_SUMMARY = re.compile(r"ray_embed: (\d+) texts -> .* in ([\d.]+)s")


# --- memory of a process tree (Linux /proc) --------------------------------------------------------------


def children_of() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])  # the name may hold spaces
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    return children


def tree(root: int) -> list[int]:
    children, out, todo = children_of(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def proc_kb(pid: int, name: str, field: str) -> int:
    """A `Field:   123 kB` line of /proc/PID/<name>; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class TreeSampler(PeriodicSampler):
    """Every 0.5 s: the tree's summed PSS, and each process's peak resident memory (VmHWM) and command."""

    interval_s = 0.5

    def __init__(self, root: int):
        super().__init__()
        self.root = root
        self.pss_mb: list[float] = []
        self.peak_rss_mb: dict[int, float] = {}
        self.cpu_ticks: dict[int, int] = {}  # each process's user + system time at its last sample
        self.commands: dict[int, str] = {}

    def sample(self) -> None:
        total = 0
        ticks = cpu_ticks()
        for pid in tree(self.root):
            self.cpu_ticks[pid] = ticks.get(pid, self.cpu_ticks.get(pid, 0))
            total += proc_kb(pid, "smaps_rollup", "Pss")
            hwm = proc_kb(pid, "status", "VmHWM") / 1024
            if hwm:
                self.peak_rss_mb[pid] = max(self.peak_rss_mb.get(pid, 0.0), hwm)
                self.commands[pid] = command_of(pid) or self.commands.get(pid, "")
        self.pss_mb.append(total / 1024)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time per kind of process (every process of the tree started during the run, so all of it)."""
        hz = os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        for pid, ticks in self.cpu_ticks.items():
            name = process_kind(self.commands.get(pid, ""))
            out[name] = round(out.get(name, 0.0) + ticks / hz, 1)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def peak_of(self, pattern: str) -> float:
        return max((mb for pid, mb in self.peak_rss_mb.items() if pattern in self.commands.get(pid, "")), default=0.0)


def process_kind(command: str) -> str:
    """'ray::MapWorker(MapBatches(EmbedBatch))' -> 'ray::MapWorker'; '/x/raylet --flags' -> 'raylet'."""
    if command.startswith("ray::"):
        return re.split(r"[(\s]", command, maxsplit=1)[0]
    words = command.split()
    if not words:
        return "?"
    if len(words) > 2 and words[1] == "-m":  # python -m benchmarks.x: name the module
        return words[2]
    script = next((w for w in words[1:] if w.endswith(".py")), None)  # python SCRIPT: name the script
    return Path(script or words[0]).name


def quarter_peaks(samples: list[float]) -> list[float]:
    n = len(samples)
    return [max(samples[i * n // 4 : max((i + 1) * n // 4, i * n // 4 + 1)], default=0.0) for i in range(4)]


def cpu_ticks() -> dict[int, int]:
    ticks = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                ticks[int(entry)] = int(fields[11]) + int(fields[12])  # utime + stime
            except (OSError, IndexError, ValueError):
                continue
    return ticks


def busiest(n: int = 4, seconds: float = 1.0) -> list[str]:
    """The processes that used the most CPU over the last second, as '85% command': what else was running."""
    before = cpu_ticks()
    time.sleep(seconds)
    after = cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    used = sorted(((after[p] - before.get(p, after[p])) / hz / seconds, p) for p in after)[::-1][:n]
    return [f"{share:.0%} {command_of(pid)[:100]}" for share, pid in used if share > 0.05]


# --- the two runs ----------------------------------------------------------------------------------------


def child_predict(texts_file: Path, weights: Path) -> None:
    """Run A inside a fresh process: prints one JSON line with the timed part."""
    import asyncio

    os.environ["E5_WEIGHTS_DIR"] = str(weights)
    from predict import Predictor

    base = dict(task="web_search", input_type="document", normalize=True, truncate=True, documents=None,
                top_k=None, encoding_format="float")

    async def run():
        p = Predictor()
        await p.setup()
        await p.predict(texts=["warm up"] * 10, texts_file=None, output_file_format="npy", **base)
        start = time.perf_counter()
        out = await p.predict(texts=None, texts_file=texts_file, output_file_format="npy", **base)
        seconds = time.perf_counter() - start
        out.embeddings_file.unlink()
        return {"texts": len(out.token_counts), "tokens": sum(out.token_counts), "seconds": seconds}

    print(json.dumps(asyncio.run(run())), flush=True)


def run_child(command: list[str], engine_pattern: str | None) -> tuple[str, dict]:
    load = os.getloadavg()
    others = busiest()
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    with TreeSampler(proc.pid) as sampler:
        output, _ = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{output[-3000:]}")
    engine = sampler.peak_of(engine_pattern) if engine_pattern else sampler.peak_rss_mb.get(proc.pid, 0.0)
    return output, {
        "wall_seconds": round(wall, 1),
        "tree_peak_pss_mb": round(max(sampler.pss_mb, default=0.0)),
        "tree_pss_quarter_peaks_mb": [round(q) for q in quarter_peaks(sampler.pss_mb)],
        "engine_peak_rss_mb": round(engine),
        "cpu_seconds": sampler.cpu_seconds(),
        "load_before": [round(x, 2) for x in load],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "busiest_before": others,
    }


def run_predict(texts_file: Path, weights: Path) -> dict:
    output, memory = run_child([sys.executable, "-m", "benchmarks.ray_bulk_compare", "--child-predict", str(texts_file), "--weights", str(weights)],
                               None)
    timed = json.loads(output.strip().splitlines()[-1])
    return {"engine": "predict", **timed, "texts_per_second": round(timed["texts"] / timed["seconds"], 1), **memory}


def run_ray(texts_file: Path, weights: Path, rows_per_batch: int) -> dict:
    out_dir = Path(tempfile.mkdtemp(prefix="e5-ray-")) / "vectors"
    threads = os.cpu_count() or 1
    command = [sys.executable, str(ROOT / "scripts" / "ray_embed.py"), str(texts_file), "--output", str(out_dir),
               "--weights", str(weights), "--input-type", "document", "--actors", "1",
               "--threads-per-actor", str(threads), "--rows-per-batch", str(rows_per_batch)]
    try:
        output, memory = run_child(command, "MapWorker")
    finally:
        shutil.rmtree(out_dir.parent, ignore_errors=True)
    match = RAY_SUMMARY.search(output)
    if not match:
        raise SystemExit(f"no summary line from ray_embed.py:\n{output[-3000:]}")
    texts, seconds = int(match.group(1)), float(match.group(2))
    return {"engine": "ray", "texts": texts, "seconds": seconds, "texts_per_second": round(texts / seconds, 1),
            "threads_per_actor": threads, **memory}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs, A then B")
    parser.add_argument("--rows-per-batch", type=int, default=4096, help="the Ray job's batch (predict() reads 4,096)")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument("--child-predict", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    weights = args.weights or Path.home() / ".cache" / "e5-cog" / "tiny"
    if not (weights / "model.safetensors").is_file():
        write_checkpoint(weights)
    if args.child_predict:
        child_predict(args.child_predict, weights)
        return 0

    texts_file = write_texts(args.texts)  # the corpus bulk_run.py measures
    runs = []
    for r in range(args.rounds):
        for run in (lambda: run_predict(texts_file, weights), lambda: run_ray(texts_file, weights, args.rows_per_batch)):
            result = {"round": r + 1, **run()}
            runs.append(result)
            print(f"round {result['round']} {result['engine']:7}: {result['texts']} texts in {result['seconds']:.1f}s "
                  f"= {result['texts_per_second']:.0f} texts/s (wall {result['wall_seconds']:.0f}s); peak PSS of the "
                  f"process tree {result['tree_peak_pss_mb']} MB, engine process peak RSS "
                  f"{result['engine_peak_rss_mb']} MB; load before {result['load_before'][0]}", flush=True)
    shutil.rmtree(texts_file.parent, ignore_errors=True)
    ratios = [b["texts_per_second"] / a["texts_per_second"] for a, b in zip(runs[::2], runs[1::2])]
    print(f"ray / predict throughput, per round: {', '.join(f'{x:.3f}' for x in ratios)}; "
          f"median {statistics.median(ratios):.3f}")
    if args.json:
        summary = {"command": "python -m benchmarks.ray_bulk_compare " + " ".join(argv or sys.argv[1:]),
                   "texts": args.texts, "weights": "generated 2-layer test checkpoint" if not args.weights else str(weights),
                   "cpus": os.cpu_count(), "ratios": [round(x, 3) for x in ratios],
                   "median_ratio": round(statistics.median(ratios), 3), "runs": runs}
        args.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
