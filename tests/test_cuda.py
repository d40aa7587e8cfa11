"""The CUDA path: fp16 against the model card's fp32 on the same GPU, a real out-of-memory, padding, warm-up.

Tests marked `cuda` need a GPU and are skipped without one (benchmarks/gpu_check.sh runs them on a CUDA
machine); the others check the same logic on the CPU. `E5_CUDA_WEIGHTS` names the checkpoint
(benchmarks/gpu_check.py builds the full-size architecture there); without it, the suite's 2-layer one.
Measured values go to the JUnit XML as properties (`record_property`), where benchmarks/gpu_check.py reads them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import benchmark
from conftest import DEFAULTS
from e5 import Embedder, EngineError
from e5.model import device_profile
from reference import ModelCard
from testkit.synthetic_checkpoint import SEED_WORDS

HAS_CUDA = torch.cuda.is_available()
FP16_MIN_COSINE = 0.9999  # the GPU check's target for fp16 drift against the fp32 reference
OOM_HEADROOM = 512 * 2**20  # memory the capped forward may use beyond the weights: ~17k tokens of the real model


def on_gpu(test):
    """Mark a test `cuda` and skip it where torch sees no GPU."""
    return pytest.mark.cuda(pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")(test))


@pytest.fixture(scope="module")
def weights_dir(request) -> Path:
    given = os.environ.get("E5_CUDA_WEIGHTS")
    return Path(given) if given else request.getfixturevalue("checkpoint_dir")


@pytest.fixture(scope="module")
def gpu_embedder(weights_dir):
    embedder = Embedder.load(weights_dir, device="cuda")
    yield embedder
    del embedder
    torch.cuda.empty_cache()


class TokenizerOn:
    """The card's tokenizer with its tensors moved to `device`, so ModelCard.embed runs unchanged on a GPU."""

    def __init__(self, tokenizer, device: str):
        self.tokenizer, self.device = tokenizer, device

    def __call__(self, *args, **kwargs):
        return self.tokenizer(*args, **kwargs).to(self.device)


def widths_seen(model) -> tuple[list[tuple[int, int]], object]:
    """(rows, width) of every forward that reaches `model`'s embeddings, and the hook's handle."""
    shapes: list[tuple[int, int]] = []
    handle = model.embeddings.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    return shapes, handle


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def long_texts(n: int, seed: int = 0) -> list[str]:
    """`n` different texts of 600 seed words each: every one is cut to the 512-token limit."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(SEED_WORDS) for _ in range(600)) for _ in range(n)]


# --- on any machine --------------------------------------------------------------------------------------


def test_the_cuda_profile_is_fp16_padded_to_8_without_packing():
    profile = device_profile("cuda", free_bytes=80 * 2**30, environ={})
    assert (profile.dtype, profile.pad_multiple, profile.row_tokens) == (torch.float16, 8, 0)
    # 80 GiB free: the budget is the cap, not what half the free memory would hold
    assert profile.token_budget == 65536


def test_a_cuda_shaped_profile_pads_every_forward_to_a_multiple_of_8(weights_dir):
    cpu = Embedder.load(weights_dir, device="cpu")
    cuda_shaped = Embedder(cpu.tokenizer, cpu.model, dataclasses.replace(device_profile("cuda", environ={}), device="cpu"))
    rng = random.Random(1)
    texts = [" ".join(rng.choice(SEED_WORDS) for _ in range(rng.randint(1, 40))) for _ in range(48)]
    ids = cpu.tokenize(texts).ids
    assert {len(s) % 8 for s in ids} != {0}  # lengths that need padding
    shapes, handle = widths_seen(cpu.model)
    try:
        got = cuda_shaped.embed(ids)
    finally:
        handle.remove()
    assert shapes and all(width % 8 == 0 for _, width in shapes), shapes
    assert sum(rows for rows, _ in shapes) == len(ids)  # one text per row: no packing on CUDA
    assert np.abs(got - cpu.embed(ids)).max() < 1e-5  # padding changes no vector


# --- on a GPU --------------------------------------------------------------------------------------------


@on_gpu
def test_fp16_vectors_match_the_model_card_in_fp32_on_the_same_gpu(gpu_embedder, weights_dir, record_property):
    assert next(gpu_embedder.model.parameters()).dtype == torch.float16
    texts = benchmark.mixed_corpus(128)  # 4 to ~1,200 words, some cut at 512 tokens
    ours = gpu_embedder.embed_texts(texts)
    card = ModelCard(weights_dir)
    card.model.to("cuda")
    card.tokenizer = TokenizerOn(card.tokenizer, "cuda")
    try:
        want = card.embed(texts, batch_size=16).float().cpu().numpy()
    finally:
        del card
        torch.cuda.empty_cache()
    cos = cosines(ours, want)
    record_property("texts", len(texts))
    record_property("reference_tf32_matmul", torch.backends.cuda.matmul.allow_tf32)  # False: the reference is plain fp32
    record_property("truncated", sum(gpu_embedder.tokenize(texts).truncated))
    record_property("min_cosine", float(cos.min()))
    record_property("median_cosine", float(np.median(cos)))
    record_property("max_abs_difference", float(np.abs(ours - want).max()))
    assert ours.shape == want.shape and ours.dtype == np.float32
    assert cos.min() >= FP16_MIN_COSINE, f"text {int(cos.argmin())}: cosine {cos.min():.6f} to the fp32 reference"


def cap_memory(headroom: int) -> float:
    """Let this process allocate only what it holds now plus `headroom`; returns the fraction set."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    fraction = (torch.cuda.memory_reserved() + headroom) / torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(fraction)
    return fraction


def fill_to_cap() -> list[torch.Tensor]:
    """Take every free byte under the cap, so the next allocation of any size fails.

    Memory the allocator already holds has gaps (a 20 MiB segment serves several 2 MiB weights, and its last
    gap stays free): a forward small enough to fit in them would never reach the cap. Requests over 1 MiB
    come from the allocator's large pool, the others from its small one: both get filled.
    """
    taken = []
    for size in (64 * 2**20, 8 * 2**20, 2**20 + 512, 2**20, 2**16, 2**9):
        while True:
            try:
                taken.append(torch.empty(size, dtype=torch.uint8, device="cuda"))
            except torch.OutOfMemoryError:
                break
    return taken


def uncap_memory() -> None:
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()


@on_gpu
def test_a_real_out_of_memory_splits_the_batch_and_recovers(gpu_embedder, caplog, record_property):
    ids = gpu_embedder.tokenize(long_texts(256)).ids
    expected = gpu_embedder.embed(ids)  # planned under the real budget
    # All 256 texts in one forward (131,072 tokens): its 4,096-wide MLP activations alone take 1 GiB in fp16,
    # twice the headroom, so it fails for real and the halves run.
    whole = Embedder(gpu_embedder.tokenizer, gpu_embedder.model,
                     dataclasses.replace(gpu_embedder.profile, token_budget=len(ids) * 512))
    assert len(whole.plan([len(s) for s in ids])) == 1
    fraction = cap_memory(OOM_HEADROOM)
    try:
        with caplog.at_level(logging.WARNING, logger="e5"):
            got = whole.embed(ids)
    finally:
        uncap_memory()
    splits = [r for r in caplog.records if "out of memory on a batch" in r.getMessage()]
    record_property("memory_fraction", fraction)
    record_property("oom_splits", len(splits))
    record_property("forward_attempts", whole.forward_calls)
    cos = cosines(got, expected)
    record_property("min_cosine_to_unsplit", float(cos.min()))
    record_property("max_abs_difference_to_unsplit", float(np.abs(got - expected).max()))
    assert splits, "the capped forward did not run out of memory: the cap let it through"
    assert whole.forward_calls > len(splits) + 1  # the halves ran
    # each text's vector, whatever batch it finally ran in (fp16 kernels differ a little by batch shape)
    assert cos.min() >= FP16_MIN_COSINE


@on_gpu
def test_one_text_past_the_memory_cap_fails_alone_and_the_engine_recovers(gpu_embedder):
    ids = gpu_embedder.tokenize(long_texts(1, seed=2)).ids
    expected = gpu_embedder.embed(ids)
    cap_memory(0)
    taken = fill_to_cap()
    try:
        # forward(), as the batcher calls it: embed() would fail first, allocating its output array
        with pytest.raises(EngineError, match="out of memory embedding a single text of 512 tokens") as err:
            gpu_embedder.forward(ids, [True])
    finally:
        del taken
        uncap_memory()
    assert err.value.code == "out_of_memory"
    assert cosines(gpu_embedder.embed(ids), expected).min() >= FP16_MIN_COSINE


@on_gpu
def test_gpu_forwards_are_padded_to_multiples_of_8(gpu_embedder):
    assert gpu_embedder.profile.pad_multiple == 8
    rng = random.Random(3)
    texts = [" ".join(rng.choice(SEED_WORDS) for _ in range(rng.randint(1, 300))) for _ in range(64)]
    shapes, handle = widths_seen(gpu_embedder.model)
    try:
        gpu_embedder.embed_texts(texts)
    finally:
        handle.remove()
    assert shapes and all(width % 8 == 0 for _, width in shapes), shapes


@on_gpu
def test_warm_up_runs_the_shapes_a_first_request_hits(gpu_embedder, record_property):
    shapes, handle = widths_seen(gpu_embedder.model)
    try:
        seconds = gpu_embedder.warm_up()
    finally:
        handle.remove()
    # a short query, a passage, and the longest input: one row each, widths already multiples of 8
    assert shapes == [(1, 8), (1, 64), (1, 512)]
    record_property("warm_up_seconds", seconds)


@on_gpu
def test_concurrent_requests_on_cuda_get_the_engines_vectors(gpu_embedder, weights_dir, record_property, monkeypatch):
    from predict import Predictor

    monkeypatch.setenv("E5_WEIGHTS_DIR", str(weights_dir))
    texts = [f"query number {i}: " + " ".join(SEED_WORDS[i : i + 5]) for i in range(16)]

    async def run():
        predictor = Predictor()
        await predictor.setup()
        outs = await asyncio.gather(*(predictor.predict(**{**DEFAULTS, "texts": [t]}) for t in texts))
        predictor.batcher().close()
        return predictor, outs

    predictor, outs = asyncio.run(run())
    assert predictor.embedder.profile.device.startswith("cuda")
    got = np.stack([np.asarray(o.embeddings, dtype=np.float32)[0] for o in outs])
    formatted = [f"Instruct: {DEFAULTS['task']}\nQuery: {t}" for t in texts]
    cos = cosines(got, gpu_embedder.embed_texts(formatted))
    record_property("min_cosine_to_engine", float(cos.min()))
    assert cos.min() >= FP16_MIN_COSINE
    del predictor
    torch.cuda.empty_cache()
