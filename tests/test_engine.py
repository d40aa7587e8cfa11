"""The engine below the predictor: tokenization, the CUDA-shaped path on CPU, out-of-memory splitting."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from e5 import Embedder, EngineError
from e5.model import DeviceProfile, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def embedder(checkpoint_dir):
    return Embedder.load(checkpoint_dir, device="cpu")


TEXTS = ["short", "the protein female eat " * 200, "南瓜的家常做法 " * 3, "der die das " * 60]


def test_tokenize_equals_the_tokenizers_own_truncation(embedder):
    encoded = embedder.tokenize(TEXTS)
    expected = embedder.tokenizer(TEXTS, max_length=512, truncation=True)["input_ids"]
    assert encoded.ids == expected
    assert encoded.truncated == [False, True, False, False]
    assert encoded.token_counts == [len(e) for e in expected]


def test_a_cut_at_n_tokens_equals_the_tokenizers_own_truncation_at_n(embedder):
    """Cohere's `max_tokens_per_doc` (documents cut at N tokens plus the markers): the tokenizer's own
    `max_length`, never past the model's limit, and a text under N is untouched."""
    for n in (7, 40):
        encoded = embedder.tokenize(TEXTS, cut_at=n)
        assert encoded.ids == embedder.tokenizer(TEXTS, max_length=n, truncation=True)["input_ids"]
        assert encoded.truncated == [len(ids) > n for ids in embedder.tokenizer(TEXTS)["input_ids"]]
    assert embedder.tokenize(TEXTS, cut_at=10_000).ids == embedder.tokenize(TEXTS).ids


def test_tokens_spans_point_into_the_text_and_count_what_is_embedded(embedder):
    texts = ["two cats on a mat", "南瓜的家常做法"]
    for text, tokens, ids in zip(texts, embedder.tokens(texts), embedder.tokenize(texts).ids):
        assert tokens.ids == ids and tokens.special[0] and tokens.special[-1] and not any(tokens.special[1:-1])
        spans = [span for span, special in zip(tokens.spans, tokens.special) if not special]
        assert all(0 <= a <= b <= len(text) for a, b in spans) and [a for a, _ in spans] == sorted(a for a, _ in spans)
        covered = {i for a, b in spans for i in range(a, b)}
        assert covered >= {i for i, c in enumerate(text) if not c.isspace()}


def test_cuda_shaped_batches_pad_to_8_without_changing_vectors(embedder):
    ids = embedder.tokenize(TEXTS).ids
    plain = embedder.embed(ids)
    cuda_like = Embedder(embedder.tokenizer, embedder.model, dataclasses.replace(embedder.profile, pad_multiple=8, forward_cost=512))
    assert np.abs(cuda_like.embed(ids) - plain).max() < 1e-5


def test_half_precision_path_stays_close_to_fp32(checkpoint_dir, embedder):
    # The CUDA path runs the model in fp16 and pools in fp32; on CPU the same code runs, only slower.
    profile = DeviceProfile("cpu", torch.float16, 8, 4096, 512)
    tokenizer, model = load_checkpoint(checkpoint_dir, profile)
    assert next(model.parameters()).dtype == torch.float16
    half = Embedder(tokenizer, model, profile)
    ids = embedder.tokenize(TEXTS).ids
    got, want = half.embed(ids), embedder.embed(ids)
    assert got.dtype == np.float32
    cosine = (got * want).sum(axis=1)
    assert cosine.min() > 0.999


def test_packed_rows_give_each_text_the_vector_it_gets_alone(embedder, monkeypatch):
    texts = ["query: how much protein %d" % i for i in range(12)] + ["南瓜的家常做法", "der die das " * 60, "ok"]
    ids = embedder.tokenize(texts).ids
    assert embedder.profile.row_tokens == 128  # the CPU default
    unpacked = Embedder(embedder.tokenizer, embedder.model, dataclasses.replace(embedder.profile, row_tokens=0))
    shapes = []
    real_forward = embedder.model.forward
    monkeypatch.setattr(embedder.model, "forward", lambda *a, **kw: shapes.append(kw["input_ids"].shape) or real_forward(*a, **kw))
    packed = embedder.embed(ids)
    assert sum(rows for rows, _ in shapes) < len(texts)  # texts really shared rows
    alone = np.stack([unpacked.embed([s])[0] for s in ids])
    assert np.abs(packed - alone).max() < 1e-5
    assert np.abs(packed - unpacked.embed(ids)).max() < 1e-5


def test_sixteen_concurrent_queries_go_in_one_forward(embedder):
    # 16 queries of 26-40 tokens (or 20-60). Best fit at 128 alone filled four rows and left a fifth half
    # empty, and the planner ran that row as a forward of its own in 197 of these 200 groups; with even rows
    # 19 still split at a forward cost of 32, saving a few pad tokens. At the measured cost (64) none does.
    for low, high in ((26, 40), (20, 60)):
        rng = random.Random(5)
        groups = [[rng.randint(low, high) for _ in range(16)] for _ in range(200)]
        split = sum(len(embedder.plan(lengths)) > 1 for lengths in groups)
        assert split == 0, f"{split} of 200 groups of 16 queries of {low}-{high} tokens took more than one forward"


def test_out_of_memory_splits_the_batch_and_keeps_results(embedder, monkeypatch):
    embedder = Embedder(embedder.tokenizer, embedder.model, dataclasses.replace(embedder.profile, row_tokens=0))
    ids = embedder.tokenize(["text number %d" % i for i in range(9)]).ids
    expected = embedder.embed(ids)
    real_forward = embedder.model.forward
    widths = []

    def forward_with_4_row_memory(*args, **kwargs):
        rows = kwargs["input_ids"].shape[0]
        widths.append(rows)
        if rows > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(embedder.model, "forward", forward_with_4_row_memory)
    got = embedder.embed(ids)
    assert widths == [9, 4, 5, 2, 3]  # 9 fails, halves: 4 runs, 5 fails and splits again
    assert np.abs(got - expected).max() < 1e-5


def test_out_of_memory_frees_the_failed_attempt_before_the_halves_run(embedder, monkeypatch):
    embedder = Embedder(embedder.tokenizer, embedder.model, dataclasses.replace(embedder.profile, row_tokens=0))
    ids = embedder.tokenize(["text number %d" % i for i in range(9)]).ids
    real_forward = embedder.model.forward
    failed = []  # what each failed attempt had allocated when it ran out of memory
    alive_while_retrying = []

    def forward_that_allocates_then_fails(*args, **kwargs):
        rows = kwargs["input_ids"].shape[0]
        if rows > 2:
            activation = torch.empty(rows, 4096)  # a layer's output, allocated before the failure
            failed.append(weakref.ref(activation))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        alive_while_retrying.append(sum(ref() is not None for ref in failed))
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(embedder.model, "forward", forward_that_allocates_then_fails)
    embedder.embed(ids)
    assert len(failed) >= 3 and alive_while_retrying
    assert alive_while_retrying == [0] * len(alive_while_retrying)


def test_out_of_memory_hands_the_allocators_cache_back_before_retrying(embedder, monkeypatch):
    from e5 import model as m

    released = []
    monkeypatch.setattr(m, "release_cached_memory", lambda device: released.append(device))
    real_forward = embedder.model.forward
    monkeypatch.setattr(embedder.model, "forward", lambda *a, **kw: (_ for _ in ()).throw(
        torch.OutOfMemoryError("simulated")) if kw["input_ids"].numel() > 8 else real_forward(*a, **kw))
    embedder.embed([[0, 5, 6, 2], [0, 7, 8, 2], [0, 9, 2]])
    assert released and set(released) == {embedder.profile.device}


def test_releasing_cached_memory_empties_the_cuda_cache_only_on_cuda(monkeypatch):
    from e5.model import release_cached_memory

    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    release_cached_memory("cpu")
    assert emptied == []
    release_cached_memory("cuda:0")
    assert emptied == [1]


def test_asking_for_cuda_where_there_is_none_stops_setup(monkeypatch):
    from e5 import WeightsError
    from e5.model import choose_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(WeightsError, match="E5_DEVICE=cuda but CUDA is not available"):
        choose_device({"E5_DEVICE": "cuda"})
    assert choose_device({}) == "cpu" and choose_device({"E5_DEVICE": "cpu"}) == "cpu"


def test_out_of_memory_on_packed_rows_splits_their_texts(embedder, monkeypatch):
    ids = embedder.tokenize(["text number %d" % i for i in range(9)]).ids
    expected = embedder.embed(ids)
    real_forward = embedder.model.forward
    ran, failed = [], []

    def forward_with_memory_for_30_tokens(*args, **kwargs):
        texts = int(kwargs["position_ids"].eq(2).sum())  # every text starts at position pad_id + 1 = 2
        if kwargs["input_ids"].numel() > 30:
            failed.append(texts)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        ran.append(texts)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(embedder.model, "forward", forward_with_memory_for_30_tokens)
    got = embedder.embed(ids)
    assert max(failed) >= 8 and sum(ran) == 9  # packed rows failed; their halves ran every text once
    assert np.abs(got - expected).max() < 1e-5


def test_out_of_memory_on_one_text_is_an_engine_error(embedder, monkeypatch):
    def always_oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(embedder.model, "forward", always_oom)
    with pytest.raises(EngineError, match="out of memory embedding a single text of 3 tokens") as err:
        embedder.embed([[0, 5, 2]])
    assert err.value.code == "out_of_memory"


FAULTS_PER_FILL = """
import ctypes, resource, sys
from e5.memory import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory({})
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 24 * 1024 * 1024  # an activation-sized block: 1,536 tokens x 4,096 floats
faults = []
for _ in range(3):
    block = libc.malloc(size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    libc.memset(block, 1, size)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    libc.free(block)
print(*faults)
"""


def faults_in_fresh_process(script: str, mode: str) -> list[int]:
    """The page-fault counts a script prints, run in a new interpreter: malloc settings are process-wide."""
    run = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    return [int(n) for n in run.stdout.split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt and page-fault counts are glibc/Linux")
def test_a_freed_block_is_reused_at_once_instead_of_faulted_in_again():
    """With the thresholds set, the second allocation of a 24 MiB block touches no new page. With glibc's
    defaults the first one is mapped and unmapped, and the second faults in all its pages again.

    Fresh processes, because the thresholds are process-wide and other tests move glibc's defaults. (Real
    forwards of the small test model fault too unevenly, in either mode, to tell the two apart reliably.)
    """
    pages = 24 * 1024 * 1024 // 4096
    first, second, _ = faults_in_fresh_process(FAULTS_PER_FILL, "reuse")
    assert first > pages // 2 and second < pages // 20
    assert faults_in_fresh_process(FAULTS_PER_FILL, "defaults")[1] > pages // 2


FAULTS_IN_A_THREAD = """
import ctypes, resource, sys, threading
from e5.memory import MMAP_THRESHOLD_MAX, reuse_freed_memory
libc = ctypes.CDLL("libc.so.6")
if sys.argv[1] == "reuse":
    assert reuse_freed_memory({})
else:  # the two thresholds alone, without the top pad
    assert libc.mallopt(-3, MMAP_THRESHOLD_MAX) and libc.mallopt(-1, 1 << 30)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 31 * 1024 * 1024  # a full CPU forward's feed-forward activation: 2,040 tokens x 4,096 floats
faults = []

def forward():  # three such blocks live at once: more than one of the thread's 64 MiB heaps holds
    blocks = [libc.malloc(size) for _ in range(3)]
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for block in blocks:
        libc.memset(block, 1, size)
    faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    for block in blocks:
        libc.free(block)

def worker():
    for _ in range(3):
        forward()

thread = threading.Thread(target=worker)
thread.start()
thread.join()
print(*faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt and page-fault counts are glibc/Linux")
def test_a_worker_threads_freed_heaps_are_kept_for_the_next_forward():
    """Forwards run on the batcher's thread, whose arena is a chain of 64 MiB heaps. glibc unmaps a heap as
    soon as it is all free, whatever the trim threshold, so with the thresholds alone every forward faulted
    its largest activations in again. With the top pad set too, the second and third "forward" reuse them.
    """
    block_pages = 31 * 1024 * 1024 // 4096
    first, second, third = faults_in_fresh_process(FAULTS_IN_A_THREAD, "reuse")
    assert first > 2 * block_pages and second < block_pages // 20 and third < block_pages // 20
    assert min(faults_in_fresh_process(FAULTS_IN_A_THREAD, "thresholds")[1:]) > block_pages // 2


def test_loading_the_engine_sets_the_thresholds(checkpoint_dir, monkeypatch):
    calls = []
    monkeypatch.setattr("e5.engine.reuse_freed_memory", lambda: calls.append(1) or True)
    Embedder.load(checkpoint_dir, device="cpu")
    assert calls == [1]


def test_the_cpu_budget_keeps_the_largest_activation_under_the_heaps_limit():
    from e5.memory import MMAP_THRESHOLD_MAX
    from e5.model import CPU_TOKEN_BUDGET

    # tokens x the real model's 4,096-wide feed-forward, float32: at 2,048 tokens it is exactly 32 MiB,
    # which glibc always maps afresh (~393,000 page faults per forward of the full-size model).
    assert CPU_TOKEN_BUDGET * 4096 * 4 < MMAP_THRESHOLD_MAX


def test_a_malloc_setting_in_the_environment_is_left_alone(monkeypatch):
    from e5 import memory

    calls = []
    monkeypatch.setattr(memory, "_libc_function", lambda name: lambda *args: calls.append((name, args)) or 1)
    assert not memory.reuse_freed_memory({"MALLOC_MMAP_THRESHOLD_": "1048576"})
    assert not memory.reuse_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
    assert calls == []
    assert memory.reuse_freed_memory({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"})
    assert calls == [("mallopt", (-3, memory.MMAP_THRESHOLD_MAX)), ("mallopt", (-1, 1 << 30)),
                     ("mallopt", (-2, memory.THREAD_HEAP_SIZE))]
