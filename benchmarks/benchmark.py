"""Side-by-side throughput and latency: this predictor vs the model card's code vs sentence-transformers.

    python -m benchmarks.benchmark [--out bench-out] [--mixed 128] [--short 2048] [--latency 20] [--paired-rounds 3]
                                [--interleaved-rounds 3] [--breakdown] [--weights DIR] [--matmul-seconds 3]
                                [--matmul-rows 1024,2048,4096] [--no-sentence-transformers] [--no-chart]

One process, the same strings for every contender, each warmed up first. The model is the real checkpoint
when weights/ holds it, else the full-size architecture (24 x 1024, vocab 250002, random weights) generated
once into ~/.cache/e5-cog/full-size. On a CUDA machine everything runs in fp16 there, unchanged.

Reports tokens/s and ratios, padding efficiency (real tokens / computed tokens, counted at the model's
input), achieved model FLOP/s against this machine's dense matmul FLOP/s measured in the same run (before
each contender and at the end, since a shared machine drifts; the best of them is the peak) and, paired,
our mixed run repeated between matmul measurements (MFU against the machine's speed at that time) and,
interleaved, one micro-batch at a time with matmuls after each for as long as it took (MFU against the
machine's speed in the same moments), setup time, peak memory, the cost of the output path, and
single-query latency against a bare forward pass (each timed apart, and paired query by query).
Writes results.json and chart.png under --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent

from e5.batcher import IDLE_TRIM_S  # noqa: E402
from testkit.synthetic_checkpoint import FULL_SIZE, SEED_WORDS, write_checkpoint  # noqa: E402

FULL_SIZE_CACHE = Path.home() / ".cache" / "e5-cog" / "full-size-xlmr"  # XLM-R's real vocabulary
TASK = "Given a web search query, retrieve relevant passages that answer the query"


# --- workloads ------------------------------------------------------------------------------------------


def mixed_corpus(n: int, seed: int = 0) -> list[str]:
    """Multilingual texts with a heavy tail of lengths: 70% short (queries, titles), 25% passages,
    5% long documents past 512 tokens; every script of the vocabulary mixed in."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        low, high = (2, 40) if r < 0.7 else (40, 300) if r < 0.95 else (400, 1200)
        words = int(math.exp(rng.uniform(math.log(low), math.log(high))))
        out.append(" ".join(rng.choice(SEED_WORDS) for _ in range(words)))
    rng.shuffle(out)
    return out


def short_queries(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [f"Instruct: {TASK}\nQuery: " + " ".join(rng.choice(SEED_WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


# --- the machine's limit --------------------------------------------------------------------------------


def gemm_shapes(rows) -> tuple[tuple[int, int, int], ...]:
    """(m, k, n) of the model's dense layers for each token count m: 1024 -> 4096 (MLP in, and Q/K/V as one
    1024 -> 3072), 4096 -> 1024 (MLP out)."""
    return tuple((m, k, n) for m in rows for k, n in ((1024, 4096), (4096, 1024), (1024, 3072)))


# The probe's settings, for the whole run (main sets them from --matmul-rows and --matmul-seconds): a GPU
# forward carries up to 65,536 tokens, whose GEMMs run faster than 4,096 rows do; a dry run wants small ones.
MATMUL_SHAPES = gemm_shapes((1024, 2048, 4096))
MATMUL_SECONDS = 3.0
MIN_PROBE_S = 0.1  # a GPU forward takes milliseconds: each shape still gets ~11 ms of GEMMs, not a few launches


class MatmulProbe:
    """Dense matmuls at the model's GEMM shapes (tokens x 1024 <-> 4096), each run for its share of a given time.

    FLOPs and seconds add up per shape over every `run`, so a probe spread over many short runs gives the
    machine's mean rate over those moments.
    """

    def __init__(self, device: str, dtype: torch.dtype, shapes=None):
        self.device = device
        self.operands = {}
        for m, k, n in shapes or MATMUL_SHAPES:
            a = torch.randn(m, k, device=device, dtype=dtype)
            b = torch.randn(k, n, device=device, dtype=dtype)
            for _ in range(3):
                a @ b
            self.operands[(m, k, n)] = (a, b)
        sync(device)
        self.reset()

    def reset(self) -> None:
        self.flops = dict.fromkeys(self.operands, 0.0)
        self.seconds = dict.fromkeys(self.operands, 0.0)

    def run(self, seconds: float) -> None:
        for (m, k, n), (a, b) in self.operands.items():
            sync(self.device)
            start, done = time.perf_counter(), 0
            while time.perf_counter() - start < seconds / len(self.operands):
                a @ b
                done += 1
                if done % 8 == 0:
                    sync(self.device)
            sync(self.device)
            self.flops[(m, k, n)] += 2 * m * k * n * done
            self.seconds[(m, k, n)] += time.perf_counter() - start

    def best_rate(self) -> float:
        """FLOP/s of the fastest shape, over all its runs."""
        return max(self.flops[s] / self.seconds[s] for s in self.flops if self.seconds[s] > 0)


def matmul_flops(device: str, dtype: torch.dtype, seconds: float | None = None) -> float:
    """Best dense matmul FLOP/s over the model's own GEMM shapes, `seconds` in all (MATMUL_SECONDS by default).

    3 s, not 1: on a shared 2-core machine a 1 s measurement caught a slow moment (193 GFLOP/s against
    220-270 in longer ones) and inflated every MFU by a quarter.
    """
    probe = MatmulProbe(device, dtype)
    probe.run(MATMUL_SECONDS if seconds is None else seconds)
    return probe.best_rate()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class FlopCounter:
    """Counts what reaches the encoder (rows x padded length per forward), for every contender alike.

    The hook sits on the embeddings layer: sentence-transformers calls `model.forward` directly, which
    skips hooks on the model itself.
    """

    def __init__(self, model, config):
        self.config = config
        self.computed_tokens = 0
        self.flops = 0.0
        self.forwards = 0
        self._handle = model.embeddings.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        b, t = ids.shape
        self.forwards += 1
        self.computed_tokens += b * t
        self.flops += model_flops(self.config, b, t)

    def reset(self):
        self.computed_tokens, self.flops, self.forwards = 0, 0.0, 0


def dense_flops(config, tokens: int) -> float:
    """FLOPs of the encoder's dense layers (Q, K, V, output, and the two MLP matrices) over `tokens`."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return 2 * (4 * h * h + 2 * h * i) * layers * tokens


def model_flops(config, batch: int, length: int) -> float:
    """Forward FLOPs of the encoder: the dense layers per token plus attention's two T x T products."""
    attention = 2 * 2 * length * length * config.hidden_size * config.num_hidden_layers * batch
    return dense_flops(config, batch * length) + attention


def useful_flops(config, lengths: list[int]) -> float:
    return sum(model_flops(config, 1, n) for n in lengths)


# --- contenders -----------------------------------------------------------------------------------------


class ThisPredictor:
    name = "this predictor"

    def __init__(self, weights: Path, device: str):
        os.environ["E5_WEIGHTS_DIR"] = str(weights)
        os.environ["E5_DEVICE"] = device
        from predict import Predictor

        self.loop = asyncio.new_event_loop()
        start = time.perf_counter()
        self.predictor = Predictor()
        self.loop.run_until_complete(self.predictor.setup())
        self.setup_seconds = time.perf_counter() - start
        self.model = self.predictor.embedder.model

    def embed(self, texts: list[str]):
        # The strings are already formatted (queries carry their instruction), so all go in as documents.
        out = self.loop.run_until_complete(self.predictor.predict(
            texts=texts, task=TASK, input_type="document", normalize=True, truncate=True,
            documents=None, top_k=None, encoding_format="float"))
        return out

    def set_idle_trim(self, seconds: float) -> None:
        """After how long idle the batcher hands freed memory back (e5.batcher.IDLE_TRIM_S by default)."""

        async def set_it():
            self.predictor.batcher().idle_trim_s = seconds

        self.loop.run_until_complete(set_it())

    def close(self):
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


class ModelCardCode:
    """The model card's snippet, batched: tokenizer(padding=True, truncation=True, max_length=512) per 32."""

    name = "model card code (batch 32)"

    def __init__(self, weights: Path, device: str, dtype: torch.dtype):
        from transformers import AutoModel, AutoTokenizer

        start = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(weights)
        self.model = AutoModel.from_pretrained(weights, dtype=dtype).to(device).eval()
        self.setup_seconds = time.perf_counter() - start
        self.device = device

    @torch.no_grad()
    def embed(self, texts: list[str], batch_size: int = 32):
        import torch.nn.functional as F

        out = []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[i : i + batch_size], max_length=512, padding=True, truncation=True, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            masked = hidden.masked_fill(~batch["attention_mask"][..., None].bool(), 0.0)
            pooled = masked.sum(dim=1) / batch["attention_mask"].sum(dim=1)[..., None]
            out.append(F.normalize(pooled, p=2, dim=1).float().cpu())
        return torch.cat(out).numpy().tolist()


class SentenceTransformersCode:
    def __init__(self, weights: Path, device: str, dtype: torch.dtype, batch_size: int | None):
        from sentence_transformers import SentenceTransformer, models

        start = time.perf_counter()
        transformer = models.Transformer(str(weights), max_seq_length=512, model_kwargs={"dtype": dtype})
        pooling = models.Pooling(transformer.get_word_embedding_dimension(), "mean")
        self.st = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device=device)
        self.setup_seconds = time.perf_counter() - start
        self.batch_size = batch_size
        self.model = transformer.auto_model
        self.name = f"sentence-transformers (batch {batch_size or 'default'})"

    def embed(self, texts: list[str]):
        kwargs = {} if self.batch_size is None else {"batch_size": self.batch_size}
        return self.st.encode(texts, convert_to_numpy=True, **kwargs).tolist()


# --- measuring ------------------------------------------------------------------------------------------


def run_throughput(contender, counter: FlopCounter, texts: list[str], real_tokens: int, config, peak: float, device: str) -> dict:
    contender.embed(texts[:8])  # warm-up on this workload's shapes
    counter.reset()
    sync(device)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    output = contender.embed(texts)
    sync(device)
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    lengths_flops = counter.flops
    return output, {
        "seconds": seconds,
        "tokens_per_s": real_tokens / seconds,
        "padding_efficiency": real_tokens / counter.computed_tokens,
        "forwards": counter.forwards,
        # Pages the process touched for the first time, per forward: freed activations given back to the OS
        # and faulted in again (see e5/memory.py). Every contender runs under our settings: they are process-wide.
        "page_faults_per_forward": faults / max(1, counter.forwards),
        "achieved_flops": lengths_flops / seconds,
        "computed_flops_fraction_of_peak": lengths_flops / seconds / peak,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def timed(device: str, run) -> float:
    """Seconds `run()` takes, with the device's queue drained before and after."""
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - start


def run_latency(contender, queries: list[str], device: str) -> dict:
    contender.embed(queries[:1])
    times = [timed(device, lambda: contender.embed([q])) for q in queries]
    return {"p50_ms": 1000 * percentile(times, 50), "p99_ms": 1000 * percentile(times, 99), "n": len(times)}


def bare_inputs(tokenizer, query: str, device: str):
    """One query as the encoder's input, tokenized the way the model card does."""
    return tokenizer(query, truncation=True, max_length=512, return_tensors="pt").to(device)


@torch.inference_mode()
def bare_forward_latency(model, tokenizer, queries: list[str], device: str) -> dict:
    """The floor for one query: the encoder alone on the same tokens, no pooling, no tokenization."""
    encoded = [bare_inputs(tokenizer, q, device) for q in queries]
    model(**encoded[0])
    times = [timed(device, lambda: model(**batch)) for batch in encoded]
    return {"p50_ms": 1000 * percentile(times, 50), "p99_ms": 1000 * percentile(times, 99), "n": len(times)}


@torch.inference_mode()
def paired_latency(contender, model, tokenizer, queries: list[str], device: str) -> dict:
    """Each query through the contender and as a bare forward, back to back, the order alternating.

    The two separate latency runs above are timed minutes apart, and a shared machine's speed moves by more
    than a request adds to its forward; here each pair sees the same moment, and the median of the
    per-query ratios is the request's cost over the bare forward.
    """
    ours, bare = [], []
    contender.embed(queries[:1])
    for i, q in enumerate(queries):
        encoded = bare_inputs(tokenizer, q, device)
        if i % 2 == 0:
            ours.append(timed(device, lambda: contender.embed([q])))
            bare.append(timed(device, lambda: model(**encoded)))
        else:
            bare.append(timed(device, lambda: model(**encoded)))
            ours.append(timed(device, lambda: contender.embed([q])))
    ratios = [o / b for o, b in zip(ours, bare)]
    return {"median_ratio": statistics.median(ratios), "ratios": ratios, "ours_p50_ms": 1000 * percentile(ours, 50),
            "bare_p50_ms": 1000 * percentile(bare, 50), "n": len(queries)}


def paired_mfu(contender, texts: list[str], useful: float, device: str, dtype: torch.dtype, rounds: int) -> dict:
    """The workload `rounds` times, each between two matmul measurements: MFU against the machine's speed then.

    A shared machine's matmul rate wanders by a third within minutes, so the best rate seen anywhere in a
    20-minute run compares this forward at one moment with the machine at another. Here each round is held
    against the better of the two measurements taken right before and right after it (the next round
    reuses the "after"), and the median round is the figure.
    """
    out = []
    before = matmul_flops(device, dtype)
    for _ in range(rounds):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        seconds = timed(device, lambda: contender.embed(texts))
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        after = matmul_flops(device, dtype)
        out.append({"seconds": seconds, "matmul_before": before, "matmul_after": after,
                    "mfu": useful / seconds / max(before, after), "page_faults": faults})
        before = after
    return {"rounds": out, "median_mfu": statistics.median(r["mfu"] for r in out)}


def interleaved_mfu(embed, embedder, texts: list[str], counter: FlopCounter, device: str, dtype: torch.dtype,
                    rounds: int, probe: MatmulProbe | None = None) -> dict:
    """The workload one micro-batch at a time, each followed by matmuls for as long as it took: MFU without drift.

    A paired round holds a pass of ~25 s against 3 s probes before and after it, and this machine's speed
    moves within those 25 s (in one run a 23.0 s pass sat between readings of 274 and 248 GFLOP/s, the
    next pass took 27.4 s between 248 and 306). Here the requests are the micro-batches of our own plan for
    the whole workload, sent one by one through `embed`, and after each the probe runs the model's GEMM
    shapes for as long as that request took. Forwards and matmuls then sample the same moments in equal
    measure, so drift slower than a forward (seconds here) cancels. The rate of record is still the
    fastest shape's, as in `matmul_flops`, but averaged over the round instead of its best 0.3 s.
    """
    counts = embedder.tokenize(texts).token_counts
    requests = [[texts[i] for i in batch] for batch in embedder.plan(counts)]
    useful = useful_flops(embedder.model.config, counts)  # every round sends every text once
    probe = probe or MatmulProbe(device, dtype)
    out = []
    for _ in range(rounds):
        probe.reset()
        counter.reset()
        seconds = 0.0
        for request in requests:
            took = timed(device, lambda: embed(request))
            seconds += took
            probe.run(max(took, MIN_PROBE_S))
        rate = probe.best_rate()
        out.append({"seconds": seconds, "matmul_rate": rate, "mfu": useful / seconds / rate,
                    "requests": len(requests), "forwards": counter.forwards})
    return {"rounds": out, "median_mfu": statistics.median(r["mfu"] for r in out)}


GEMM_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm")
ATTENTION_PREFIX = "aten::_scaled_dot_product"


def time_breakdown(embedder, texts: list[str], config) -> dict:
    """Where a CPU forward's time goes, from torch's profiler: the dense GEMMs, attention, everything else.

    The engine runs here on this thread, with the same plan as through predict(): the profiler records
    the thread that starts it, and predict() runs its forwards on the batcher's thread.

    It also gives the FLOP/s the GEMMs themselves reach (dense FLOPs of the computed tokens over their
    self time), which bounds the MFU: no batching can beat GEMM efficiency x GEMM share of the time.
    """
    from torch.profiler import ProfilerActivity, profile

    computed_tokens: list[int] = []  # rows x padded length of each forward
    hook = embedder.model.embeddings.register_forward_pre_hook(
        lambda module, args, kwargs: computed_tokens.append(kwargs["input_ids"].numel()), with_kwargs=True)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            embedder.embed_texts(texts)
    finally:
        hook.remove()
    self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(self_us.values())
    gemm = sum(self_us.get(op, 0) for op in GEMM_OPS)
    attention = sum(v for k, v in self_us.items() if k.startswith(ATTENTION_PREFIX))
    return {"gemm_share": gemm / total, "attention_share": attention / total, "other_share": 1 - (gemm + attention) / total,
            "gemm_flops": dense_flops(config, sum(computed_tokens)) / (gemm / 1e6), "profiled_seconds": total / 1e6}


def paired_gemm_efficiency(breakdown: dict) -> float:
    """The profiled GEMMs' FLOP/s against the better matmul measurement taken right before and after them."""
    return breakdown["gemm_flops"] / max(breakdown["matmul_around"])


def output_path_cost(out, request_seconds: float) -> dict:
    """Where the time goes for a big request of short texts: the request vs turning vectors into JSON."""
    from e5.encodings import encode_vectors

    total = request_seconds
    vectors = np.asarray(out.embeddings, dtype=np.float32)
    t0 = time.perf_counter()
    encoded = encode_vectors(vectors, "float").tolist()
    t1 = time.perf_counter()
    body = json.dumps({"embeddings": encoded})
    t2 = time.perf_counter()
    # In-process only: Cog's own encoder costs more (benchmarks/loadtest.py output measures it on the server).
    return {"request_seconds": total, "tolist_seconds": t1 - t0, "json_seconds": t2 - t1, "json_megabytes": len(body) / 1e6}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- main -----------------------------------------------------------------------------------------------


def pick_weights() -> tuple[Path, str]:
    weights = ROOT / "weights"
    try:
        config = json.loads((weights / "config.json").read_text())
        if config.get("num_hidden_layers") == 24 and (weights / "model.safetensors").is_file():
            return weights, "real weights"
    except (OSError, ValueError):
        pass
    if not (FULL_SIZE_CACHE / "model.safetensors").is_file():
        print(f"generating the full-size architecture into {FULL_SIZE_CACHE} (once)", flush=True)
        write_checkpoint(FULL_SIZE_CACHE, **FULL_SIZE)
    return FULL_SIZE_CACHE, "full-size architecture, random weights"


def main(argv=None) -> int:
    global MATMUL_SHAPES, MATMUL_SECONDS  # the probe's settings for this run
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out")
    parser.add_argument("--mixed", type=int, default=128, help="texts in the mixed workload")
    parser.add_argument("--short", type=int, default=2048, help="texts in the short-query workload")
    parser.add_argument("--latency", type=int, default=20, help="single-query requests per contender")
    parser.add_argument("--breakdown", action="store_true",
                        help="profile our mixed run once more, between two matmul measurements: time in GEMMs, attention and "
                        "the rest, and the GEMMs' FLOP/s against the machine's speed then (CPU)")
    parser.add_argument("--paired-rounds", type=int, default=3,
                        help="our mixed run again this many times, each between two matmul measurements (0: skip)")
    parser.add_argument("--interleaved-rounds", type=int, default=3,
                        help="our mixed run again this many times, one micro-batch per request, each followed by matmuls "
                        "for as long as it took (0: skip)")
    parser.add_argument("--st-batches", default="8,16,32", help="sentence-transformers batch sizes to try")
    parser.add_argument("--no-sentence-transformers", action="store_true",
                        help="leave sentence-transformers out (a machine without requirements-bench.txt)")
    parser.add_argument("--weights", type=Path, help="this checkpoint instead of weights/ or the full-size architecture")
    parser.add_argument("--matmul-seconds", type=float, default=MATMUL_SECONDS, help="length of each matmul measurement")
    parser.add_argument("--matmul-rows", default="1024,2048,4096",
                        help="token counts (GEMM rows) the matmul measurements try; the fastest shape is the peak")
    parser.add_argument("--no-chart", action="store_true", help="write no chart.png (no matplotlib needed)")
    args = parser.parse_args(argv)
    MATMUL_SHAPES = gemm_shapes(int(m) for m in args.matmul_rows.split(","))
    MATMUL_SECONDS = args.matmul_seconds

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    weights, weights_kind = (args.weights, f"the checkpoint in {args.weights}") if args.weights else pick_weights()
    args.out.mkdir(parents=True, exist_ok=True)
    machine = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    print(f"device {device} ({machine}), {str(dtype)[6:]}, model: {weights_kind}", flush=True)

    peak = matmul_flops(device, dtype)
    print(f"dense matmul peak measured: {peak / 1e9:.1f} GFLOP/s", flush=True)

    ours = ThisPredictor(weights, device)
    ours_rss = peak_rss_mb()
    ours_cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    tokenizer = ours.predictor.embedder.tokenizer
    config = ours.model.config

    workloads = {"mixed": mixed_corpus(args.mixed), "short": short_queries(args.short)}
    real = {}
    for name, texts in workloads.items():
        enc = ours.predictor.embedder.tokenize(texts)
        real[name] = sum(enc.token_counts)
        useful = useful_flops(config, enc.token_counts)
        print(f"workload {name}: {len(texts)} texts, {real[name]} tokens, {sum(enc.truncated)} truncated", flush=True)
        real[name + "_useful_flops"] = useful

    contenders = [ours, ModelCardCode(weights, device, dtype)]
    contender_errors = {}
    if not args.no_sentence_transformers:
        st_sizes = [None] + [int(b) for b in args.st_batches.split(",") if b and int(b) != 32]
        for size in st_sizes:
            try:
                contenders.append(SentenceTransformersCode(weights, device, dtype, size))
            except Exception as err:  # a broken install of another library must not cost the other figures
                contender_errors[f"sentence-transformers (batch {size or 'default'})"] = f"{type(err).__name__}: {err}"
                print(f"  sentence-transformers (batch {size or 'default'}) left out: {type(err).__name__}: {err}", flush=True)

    results = {"device": device, "machine": machine, "dtype": str(dtype)[6:], "model": weights_kind,
               "matmul_shapes": MATMUL_SHAPES, "matmul_seconds": MATMUL_SECONDS, "matmul_peak_flops": peak,
               "workloads": {}, "latency": {}, "setup": {}, "matmul_flops_before": {}, "contender_errors": contender_errors}
    for contender in contenders:
        # The machine's speed right before each contender: a shared machine drifts between them, and this
        # shows by how much.
        results["matmul_flops_before"][contender.name] = local = matmul_flops(device, dtype)
        print(f"  matmul before {contender.name}: {local / 1e9:.1f} GFLOP/s", flush=True)
        counter = FlopCounter(contender.model, config)
        results["setup"][contender.name] = contender.setup_seconds
        for name, texts in workloads.items():
            if name == "short" and isinstance(contender, SentenceTransformersCode) and contender.batch_size is not None:
                continue  # the short workload compares against each library's default only
            output, r = run_throughput(contender, counter, texts, real[name], config, peak, device)
            if contender is ours and name == "short":
                results["output_path_short"] = output_path_cost(output, r["seconds"])
            r["mfu"] = real[name + "_useful_flops"] / r["seconds"] / peak
            results["workloads"].setdefault(name, {})[contender.name] = r
            print(f"  {name:6s} {contender.name:38s} {r['tokens_per_s']:9.1f} tok/s  padding eff {r['padding_efficiency']:.3f}  "
                  f"MFU {r['mfu']:.3f}  ({r['seconds']:.1f}s, {r['forwards']} forwards)", flush=True)
            if contender is ours and name == "mixed" and args.paired_rounds:
                results["paired_mixed"] = pm = paired_mfu(ours, texts, real["mixed_useful_flops"], device, dtype, args.paired_rounds)
                print("  mixed  paired MFU by round: " + ", ".join(
                    f"{r['mfu']:.3f} ({r['matmul_before'] / 1e9:.0f}/{r['matmul_after'] / 1e9:.0f} GFLOP/s around {r['seconds']:.1f}s, "
                    f"{r['page_faults']:,} page faults)"
                    for r in pm["rounds"]) + f"; median {pm['median_mfu']:.3f}", flush=True)
            if contender is ours and name == "mixed" and args.interleaved_rounds:
                # The gaps between these requests are the probe's, not idle time: as within one request of
                # the whole workload, the batcher keeps its freed memory through them.
                ours.set_idle_trim(math.inf)
                results["interleaved_mixed"] = im = interleaved_mfu(
                    ours.embed, ours.predictor.embedder, texts, counter, device, dtype, args.interleaved_rounds)
                ours.set_idle_trim(IDLE_TRIM_S)
                print("  mixed  interleaved MFU by round: " + ", ".join(
                    f"{r['mfu']:.3f} ({r['seconds']:.1f}s in {r['requests']} requests, {r['forwards']} forwards; "
                    f"matmul {r['matmul_rate'] / 1e9:.0f} GFLOP/s meanwhile)" for r in im["rounds"])
                    + f"; median {im['median_mfu']:.3f}", flush=True)
            if contender is ours and name == "mixed" and args.breakdown:
                if device == "cpu":
                    # Between two matmul measurements, like a paired round: the GEMMs' efficiency against the
                    # machine's speed at that time, not against a reading taken minutes away.
                    before = matmul_flops(device, dtype)
                    results["breakdown_mixed"] = b = time_breakdown(ours.predictor.embedder, texts, config)
                    b["matmul_around"] = [before, matmul_flops(device, dtype)]
                    print(f"  mixed  breakdown: GEMMs {b['gemm_share']:.1%} of the time at {b['gemm_flops'] / 1e9:.1f} GFLOP/s "
                          f"({paired_gemm_efficiency(b):.3f} of the matmul rate around it: "
                          f"{b['matmul_around'][0] / 1e9:.0f}/{b['matmul_around'][1] / 1e9:.0f} GFLOP/s), "
                          f"attention {b['attention_share']:.1%}, the rest {b['other_share']:.1%}", flush=True)
                else:
                    print("  --breakdown profiles CPU runs only; skipped on", device, flush=True)
        if args.latency and (contender is ours or contender.name.endswith("default)") or isinstance(contender, ModelCardCode)):
            queries = short_queries(args.latency, seed=7)
            results["latency"][contender.name] = run_latency(contender, queries, device)
            print(f"  latency {contender.name:37s} p50 {results['latency'][contender.name]['p50_ms']:.1f} ms  "
                  f"p99 {results['latency'][contender.name]['p99_ms']:.1f} ms", flush=True)
        counter._handle.remove()

    if args.latency:
        bare = bare_forward_latency(ours.model, tokenizer, short_queries(args.latency, seed=7), device)
        results["latency"]["bare forward pass"] = bare
        print(f"  latency {'bare forward pass':37s} p50 {bare['p50_ms']:.1f} ms  p99 {bare['p99_ms']:.1f} ms", flush=True)
        results["paired_latency"] = pl = paired_latency(ours, ours.model, tokenizer, short_queries(args.latency, seed=7), device)
        print(f"  latency paired, query by query: this predictor p50 {pl['ours_p50_ms']:.1f} ms, bare forward p50 "
              f"{pl['bare_p50_ms']:.1f} ms, median ratio {pl['median_ratio']:.2f}x", flush=True)
    ours.close()
    # The peak again at the end. The fractions use the best rate seen anywhere in the run, so a clock that
    # drifted during it cannot flatter them; the paired rounds' measurements and the GEMMs inside our
    # forward (--breakdown) count as sightings too.
    seen = [matmul_flops(device, dtype), *results["matmul_flops_before"].values()]
    for r in results.get("paired_mixed", {}).get("rounds", []):
        seen += [r["matmul_before"], r["matmul_after"]]
    seen += [r["matmul_rate"] for r in results.get("interleaved_mixed", {}).get("rounds", [])]
    if "breakdown_mixed" in results:
        seen += [results["breakdown_mixed"]["gemm_flops"], *results["breakdown_mixed"]["matmul_around"]]
    end_peak = max(seen)
    if end_peak > peak:
        for rows in results["workloads"].values():
            for r in rows.values():
                r["mfu"] *= peak / end_peak
                r["computed_flops_fraction_of_peak"] *= peak / end_peak
        results["matmul_peak_flops"] = peak = end_peak
    print(f"dense matmul peak (best of every measurement in the run): {peak / 1e9:.1f} GFLOP/s")
    results["peak_rss_mb_after_our_setup"] = ours_rss
    results["peak_rss_mb_end"] = peak_rss_mb()
    if ours_cuda_peak is not None:
        results["cuda_peak_mb_after_our_setup"] = ours_cuda_peak
    summarize(results, ours.name)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'results.json'}")
    if not args.no_chart:
        chart(results, args.out / "chart.png")
        print(f"wrote {args.out / 'chart.png'}")
    return 0


def summarize(results: dict, ours: str) -> None:
    print("\nsummary")
    speed = results.get("matmul_flops_before", {})
    for name, rows in results["workloads"].items():
        base = rows[ours]["tokens_per_s"]
        for contender, r in rows.items():
            if contender != ours:
                print(f"  {name}: this predictor is {base / r['tokens_per_s']:.2f}x {contender}")
    if speed:
        print("  matmul GFLOP/s before each contender (the machine's drift): "
              + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in speed.items()))
    lat = results["latency"]
    if ours in lat and "bare forward pass" in lat:
        print(f"  single query p50: {lat[ours]['p50_ms'] / lat['bare forward pass']['p50_ms']:.2f}x a bare forward pass "
              f"(timed apart)")
    if "paired_latency" in results:
        print(f"  single query, paired with a bare forward of the same tokens: median ratio {results['paired_latency']['median_ratio']:.2f}x")
    for name, rows in results["workloads"].items():
        print(f"  {name}: MFU (useful FLOP/s / measured matmul peak) {rows[ours]['mfu']:.3f}, padding efficiency "
              f"{rows[ours]['padding_efficiency']:.3f}, page faults per forward {rows[ours]['page_faults_per_forward']:,.0f}")
    if "paired_mixed" in results:
        print(f"  mixed: paired MFU (each round against the matmul rate measured around it) median "
              f"{results['paired_mixed']['median_mfu']:.3f}, rounds "
              + ", ".join(f"{r['mfu']:.3f}" for r in results["paired_mixed"]["rounds"]))
    if "interleaved_mixed" in results:
        print(f"  mixed: interleaved MFU (one micro-batch per request, each followed by matmuls for as long) median "
              f"{results['interleaved_mixed']['median_mfu']:.3f}, rounds "
              + ", ".join(f"{r['mfu']:.3f}" for r in results["interleaved_mixed"]["rounds"]))
    if "breakdown_mixed" in results:
        b = results["breakdown_mixed"]
        print(f"  mixed: GEMMs take {b['gemm_share']:.1%} of the forward time and run at {b['gemm_flops'] / results['matmul_peak_flops']:.3f} "
              f"of the matmul peak, {paired_gemm_efficiency(b):.3f} of the rate measured around them; attention "
              f"{b['attention_share']:.1%}, the rest {b['other_share']:.1%}")
    o = results["output_path_short"]
    print(f"  short workload: request {o['request_seconds']:.2f}s, tolist {o['tolist_seconds']:.3f}s, "
          f"json {o['json_seconds']:.3f}s ({o['json_megabytes']:.1f} MB)")
    print(f"  setup (s): " + ", ".join(f"{k} {v:.1f}" for k, v in results["setup"].items()))
    print(f"  peak RSS after our setup: {results['peak_rss_mb_after_our_setup']:.0f} MB")


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(results["workloads"])
    fig, axes = plt.subplots(1, len(workloads) + 1, figsize=(6 * (len(workloads) + 1), 4.5))
    for ax, name in zip(axes, workloads):
        rows = results["workloads"][name]
        labels = list(rows)
        ax.barh(labels, [rows[k]["tokens_per_s"] for k in labels], color=["#d62728"] + ["#7f7f7f"] * (len(labels) - 1))
        ax.set_title(f"{name} workload: tokens/s (higher is better)")
        ax.invert_yaxis()
    lat = results["latency"]
    labels = list(lat)
    axes[-1].barh(labels, [lat[k]["p50_ms"] for k in labels], color="#1f77b4")
    axes[-1].set_title("single query p50, ms (lower is better)")
    axes[-1].invert_yaxis()
    fig.suptitle(f"{results['model']} on {results['device']} ({results['machine']}), {results['dtype']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
