"""What one forward costs beyond its tokens, and whether the planner's cuts pay for themselves.

    python -m benchmarks.forward_cost [--costs 32,64] [--rounds 6] [--groups 6] [--mixed 128] [--row-tokens 0,128]
                                   [--weights DIR] [--json out.json]

The planner (`e5/batching.py`) prices a forward as its padded tokens plus a fixed cost per forward counted
in tokens (`forward_cost`, `e5/model.py`), and cuts a batch in two only where the padding saved exceeds that
cost. This measures both sides with the benchmark's model (the real weights when weights/ holds them, else
the full-size architecture), on CUDA when available, through the engine's own `forward`:

shapes: forwards of 32 tokens up to the token budget (rows of 128 tokens past 128), fitted to
        seconds = fixed + per_token x tokens. fixed / per_token is the forward's fixed cost in tokens.
plans:  the plans at each cost in --costs, for two workloads: the benchmark's mixed corpus, and groups of 16
        short queries (what a closed loop of 16 clients hands the batcher) that the costs plan differently.
        Only the forwards where the plans differ are timed, the costs alternating for --rounds rounds, so a
        drifting machine weighs on both alike. Reports each cost's median seconds and the rounds it won.
packing (--row-tokens, e.g. 0,128): the mixed corpus and --short queries embedded whole at each row size
        (`E5_ROW_TOKENS`; 0 is one text per row), alternating for --rounds rounds: seconds, forwards and
        padding efficiency per row size. Packing saves pad tokens but gives packed rows a block-diagonal
        mask, which on CUDA moves SDPA off its fastest kernels: this says which wins on the machine.
On CUDA each shape also reports the peak memory its forward allocated beyond what was held before it, per
token: what `CUDA_BYTES_PER_TOKEN` in e5/model.py estimates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

import torch  # noqa: E402

from benchmarks.benchmark import mixed_corpus, pick_weights, short_queries, timed  # noqa: E402
from e5.batching import pack_rows, round_up  # noqa: E402
from e5.engine import Embedder  # noqa: E402
# Shapes past one packed row are rows of that width, as the CPU's planner builds them.
from e5.model import CPU_ROW_TOKENS as ROW  # noqa: E402


# --- pure helpers ---------------------------------------------------------------------------------------


def shape_list(token_budget: int) -> list[tuple[int, int]]:
    """(rows, width) from 32 tokens up to the budget, roughly doubling: single rows below ROW, then rows of ROW."""
    shapes = [(1, w) for w in (32, 64)]
    rows = 1
    while rows * ROW <= token_budget:
        shapes.append((rows, ROW))
        rows *= 2
    if shapes[-1][0] * ROW < token_budget // ROW * ROW:
        shapes.append((token_budget // ROW, ROW))
    return shapes


def fit_fixed_cost(tokens: list[int], seconds: list[float]) -> dict:
    """Least squares seconds = fixed + per_token x tokens; the fixed part also in tokens' worth of compute."""
    per_token, fixed = np.polyfit(np.asarray(tokens, float), np.asarray(seconds, float), 1)
    return {"fixed_s": float(fixed), "per_token_s": float(per_token), "fixed_tokens": float(fixed / per_token)}


def differing(plans: dict[int, list[list[int]]]) -> dict[int, list[list[int]]]:
    """Each cost's batches that not every plan shares (a batch is a set of indices)."""
    keys = {cost: [tuple(sorted(b)) for b in plan] for cost, plan in plans.items()}
    shared = set.intersection(*(set(k) for k in keys.values()))
    return {cost: [list(b) for b in k if b not in shared] for cost, k in keys.items()}


# --- measuring ------------------------------------------------------------------------------------------


def timed_forwards(embedder, batches: list[list[list[int]]]) -> float:
    def run() -> None:
        for sequences in batches:
            embedder.forward(sequences, [True] * len(sequences))

    return timed(embedder.profile.device, run)


def peak_bytes(device: str, run) -> int | None:
    """CUDA memory `run()` allocated at its peak beyond what was allocated before it; None (and nothing run) off CUDA."""
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def measure_shapes(embedder, filler: list[int], rounds: int) -> dict:
    def text(n: int) -> list[int]:
        return filler[: n - 1] + [embedder.eos_id]

    device = embedder.profile.device
    shapes = shape_list(embedder.profile.token_budget)
    seconds: dict[tuple[int, int], list[float]] = {s: [] for s in shapes}
    for r in range(rounds):
        for rows, width in shapes if r % 2 == 0 else shapes[::-1]:
            seconds[(rows, width)].append(timed_forwards(embedder, [[text(width)] * rows]))
    table = [{"rows": rows, "width": width, "tokens": rows * width, "seconds": statistics.median(v),
              "tokens_per_s": rows * width / statistics.median(v)} for (rows, width), v in seconds.items()]
    for row in table:  # once more, apart from the timings: reading the peak synchronizes the device
        row["peak_bytes"] = peak_bytes(device, lambda: timed_forwards(embedder, [[text(row["width"])] * row["rows"]]))
        row["peak_bytes_per_token"] = None if row["peak_bytes"] is None else row["peak_bytes"] / row["tokens"]
    return {"shapes": table, "fit": fit_fixed_cost([t["tokens"] for t in table], [t["seconds"] for t in table])}


def compare_packing(embedder, workloads: dict[str, list[list[int]]], row_tokens: list[int], rounds: int) -> dict:
    """Each workload embedded whole at each row size (0: one text per row), the sizes alternating by round."""
    base = embedder.profile
    out: dict[str, dict] = {}
    for name, sequences in workloads.items():
        lengths = [len(s) for s in sequences]
        seconds: dict[int, list[float]] = {r: [] for r in row_tokens}
        plans = {}
        try:
            for r in row_tokens:
                embedder.profile = dataclasses.replace(base, row_tokens=r)
                plans[r] = embedder.plan(lengths)
            for i in range(rounds):
                for r in row_tokens if i % 2 == 0 else row_tokens[::-1]:
                    embedder.profile = dataclasses.replace(base, row_tokens=r)
                    seconds[r].append(timed(base.device, lambda: embedder.embed(sequences)))
        finally:
            embedder.profile = base
        out[name] = {str(r): {"median_seconds": statistics.median(seconds[r]), "seconds": seconds[r],
                              "tokens_per_s": sum(lengths) / statistics.median(seconds[r]), "forwards": len(plans[r]),
                              "padding_efficiency": packed_padding_efficiency(lengths, plans[r], r, base.pad_multiple)}
                     for r in row_tokens}
    return out


def packed_padding_efficiency(lengths: list[int], plan: list[list[int]], row_tokens: int, multiple_of: int) -> float:
    """Real tokens / tokens computed when each planned batch is packed into rows as the engine packs them."""
    computed = 0
    for batch in plan:
        rows = pack_rows([lengths[i] for i in batch], row_tokens)
        used = [sum(lengths[batch[j]] for j in row) for row in rows]
        computed += len(rows) * round_up(max(used), multiple_of)
    return sum(lengths) / computed


def plans_at(embedder, sequences: list[list[int]], costs: list[int]) -> dict[int, list[list[int]]]:
    """The engine's own plan for `sequences` at each forward cost."""
    base = embedder.profile
    try:
        plans = {}
        for c in costs:
            embedder.profile = dataclasses.replace(base, forward_cost=c)
            plans[c] = embedder.plan([len(s) for s in sequences])
        return plans
    finally:
        embedder.profile = base


def compare_plans(embedder, workloads: list[list[list[int]]], costs: list[int], rounds: int) -> dict:
    """For each workload (token id lists), time each cost's differing forwards, alternating the costs."""
    batches: dict[int, list[list[list[int]]]] = {c: [] for c in costs}
    forwards = {c: 0 for c in costs}
    for sequences in workloads:
        plans = plans_at(embedder, sequences, costs)
        for c in costs:
            forwards[c] += len(plans[c])
        for c, diff in differing(plans).items():
            batches[c] += [[sequences[i] for i in b] for b in diff]
    seconds: dict[int, list[float]] = {c: [] for c in costs}
    if any(batches.values()):
        for r in range(rounds):
            for c in costs if r % 2 == 0 else costs[::-1]:
                seconds[c].append(timed_forwards(embedder, batches[c]))
    fastest = [min(costs, key=lambda c: seconds[c][r]) for r in range(len(seconds[costs[0]]))]
    return {str(c): {"forwards_in_all_plans": forwards[c], "differing_forwards": len(batches[c]),
                     "differing_tokens": sum(len(s) for b in batches[c] for s in b),
                     "median_seconds": statistics.median(seconds[c]) if seconds[c] else None,
                     "rounds_fastest": fastest.count(c), "seconds": seconds[c]} for c in costs}


def groups_planned_apart(embedder, queries: list[list[int]], costs: list[int], groups: int, size: int, seed: int) -> list[list[list[int]]]:
    """Up to `groups` random groups of `size` queries whose plans differ between the costs."""
    rng = random.Random(seed)
    found = []
    for _ in range(200 * groups):
        group = rng.sample(queries, size)
        if any(differing(plans_at(embedder, group, costs)).values()):
            found.append(group)
            if len(found) == groups:
                break
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--costs", default="32,64", help="forward costs (tokens) whose plans are compared")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds per comparison")
    parser.add_argument("--shape-rounds", type=int, default=4)
    parser.add_argument("--groups", type=int, default=6, help="groups of short queries planned apart by the costs")
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--mixed", type=int, default=128, help="texts in the mixed corpus")
    parser.add_argument("--short", type=int, default=2000, help="short queries to draw groups from, and the packing workload")
    parser.add_argument("--row-tokens", default="", help="row sizes to compare whole workloads at (e.g. 0,128); none by default")
    parser.add_argument("--weights", type=Path, help="this checkpoint instead of the benchmark's")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    weights = args.weights or pick_weights()[0]
    embedder = Embedder.load(weights)
    costs = [int(c) for c in args.costs.split(",")]
    p = embedder.profile
    print(f"device {p.device}, {str(p.dtype)[6:]}, budget {p.token_budget} tokens, forward_cost now {p.forward_cost}, weights {weights}", flush=True)

    mixed = embedder.tokenize(mixed_corpus(args.mixed)).ids
    queries = embedder.tokenize(short_queries(args.short)).ids
    filler = max(mixed, key=len)
    embedder.forward(mixed[:4], [True] * 4)  # warm-up

    shapes = measure_shapes(embedder, filler, args.shape_rounds)
    for row in shapes["shapes"]:
        memory = "" if row["peak_bytes"] is None else f", peak {row['peak_bytes'] / 2**20:8.1f} MiB ({row['peak_bytes_per_token'] / 1024:.1f} KiB/token)"
        print(f"  {row['rows']:3d} x {row['width']:3d} tokens: {row['seconds'] * 1000:8.1f} ms, {row['tokens_per_s']:8.1f} tokens/s{memory}", flush=True)
    fit = shapes["fit"]
    print(f"fit: fixed {fit['fixed_s'] * 1000:.1f} ms + {fit['per_token_s'] * 1000:.3f} ms/token: a forward's fixed cost is "
          f"{fit['fixed_tokens']:.0f} tokens", flush=True)

    groups = groups_planned_apart(embedder, queries, costs, args.groups, args.group_size, seed=3)
    report = {"device": p.device, "dtype": str(p.dtype), "token_budget": p.token_budget, "weights": str(weights), **shapes,
              "mixed": compare_plans(embedder, [mixed], costs, args.rounds),
              "query_groups": {"groups": len(groups), "size": args.group_size, **compare_plans(embedder, groups, costs, args.rounds)}}
    for name in ("mixed", "query_groups"):
        line = ", ".join(f"cost {c}: {r['differing_forwards']} forwards differ ({r['forwards_in_all_plans']} in all), "
                         f"median {r['median_seconds'] or 0:.2f} s, fastest in {r['rounds_fastest']} of {args.rounds}"
                         for c, r in ((c, report[name][str(c)]) for c in costs))
        print(f"{name}{f' ({len(groups)} groups of {args.group_size})' if name == 'query_groups' else ''}: {line}", flush=True)
    if args.row_tokens:
        sizes = [int(r) for r in args.row_tokens.split(",")]
        report["packing"] = compare_packing(embedder, {"mixed": mixed, "short": queries}, sizes, args.rounds)
        for name, by_size in report["packing"].items():
            print(f"packing, {name}: " + ", ".join(
                f"rows of {r}: {x['median_seconds']:.3f} s, {x['forwards']} forwards, padding efficiency {x['padding_efficiency']:.3f}"
                for r, x in by_size.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
