"""The model's math and its checkpoint, read top to bottom.

tokens -> pack into rows -> XLM-RoBERTa forward -> average_pool over each text's tokens -> L2 normalize.
Everything here is plain torch and transformers; batching policy lives in `batching.py`, requests in `engine.py`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .batching import round_up
from .errors import WeightsError
from .profiles import LARGE_INSTRUCT, ModelProfile, read_identity
from .settings import env_number

# This container's model, for what is about it alone (its downloads, its defaults). What answered a request
# is the loaded checkpoint's profile (Embedder.model_profile), never these.
MODEL_ID = LARGE_INSTRUCT.name
DIMENSIONS = LARGE_INSTRUCT.dimensions
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
def fill_command(weights_dir: str | Path) -> str:
    """The command that fills `weights_dir` itself (the download script's default is weights/ beside predict.py)."""
    return f"python scripts/download_weights.py --dest {weights_dir}"


# --- the math ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One forward's input: rows of token ids, each holding one text or several laid end to end."""

    input_ids: torch.Tensor  # (R, T)
    position_ids: torch.Tensor  # (R, T): every text counts from the start, as if alone in its row
    attention_mask: torch.Tensor  # (R, T), or (R, 1, T, T) for packed rows: see attention_mask_for
    token_rows: torch.Tensor | None  # (N, L): the row of each text's tokens; None when row i is text i
    token_columns: torch.Tensor | None  # (N, L): their columns
    token_mask: torch.Tensor  # (N, L): 1 for each text's real tokens

    def to(self, device) -> "Batch":
        return Batch(*(None if t is None else t.to(device) for t in (getattr(self, f.name) for f in dataclasses.fields(self))))


def pack_batch(sequences: list[list[int]], rows: list[list[int]], pad_id: int, multiple_of: int = 1) -> Batch:
    """Lay each row's texts end to end and right-pad the rows, T rounded up to `multiple_of`.

    Positions restart at every text the way XLM-R numbers a text alone (pad_id + 1, pad_id + 2, ...), so a
    packed text's vector is the one it gets alone. Built as Python lists and converted once: a GPU batch
    can hold thousands of texts.
    """
    width = round_up(max(sum(len(sequences[i]) for i in row) for row in rows), multiple_of)
    ids: list[list[int]] = []
    positions: list[list[int]] = []
    segments: list[list[int]] = []
    starts = [(0, 0)] * len(sequences)  # (row, column) where each text begins
    for r, row in enumerate(rows):
        ids_r, positions_r, segments_r = [], [], []
        for i in row:
            starts[i] = (r, len(ids_r))
            ids_r += sequences[i]
            positions_r += range(pad_id + 1, pad_id + 1 + len(sequences[i]))
            segments_r += [i] * len(sequences[i])
        pad = width - len(ids_r)
        ids.append(ids_r + [pad_id] * pad)
        positions.append(positions_r + [pad_id] * pad)
        segments.append(segments_r + [-1] * pad)
    segment_ids = torch.tensor(segments, dtype=torch.long)
    mask = attention_mask_for(segment_ids)
    batch = torch.tensor(ids, dtype=torch.long), torch.tensor(positions, dtype=torch.long), mask
    if all(row == [i] for i, row in enumerate(rows)):  # one text per row, in order: nothing to gather
        return Batch(*batch, None, None, mask)
    longest = max(len(s) for s in sequences)
    offsets = torch.arange(longest)
    token_rows = torch.tensor([r for r, _ in starts]).unsqueeze(1).expand(-1, longest)
    token_columns = (torch.tensor([c for _, c in starts]).unsqueeze(1) + offsets).clamp(max=width - 1)
    token_mask = (offsets < torch.tensor([len(s) for s in sequences]).unsqueeze(1)).long()
    return Batch(*batch, token_rows, token_columns, token_mask)


def attention_mask_for(segments: torch.Tensor) -> torch.Tensor:
    """Each token sees its own text's tokens only.

    One text per row: the usual (R, T) padding mask. Packed rows: a block-diagonal (R, 1, T, T) mask, in
    which padding sees padding, so no softmax row is empty (and NaN-free; padding outputs are never read).
    """
    next_text = (segments[:, 1:] != segments[:, :-1]) & (segments[:, 1:] >= 0)
    if not next_text.any():  # no row goes on from one text to another
        return (segments >= 0).long()
    return (segments.unsqueeze(-1) == segments.unsqueeze(-2)).unsqueeze(1)


def average_pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors that the mask keeps: (B, T, C), (B, T) -> (B, C), in float32.

    The sum runs in float32 even for a 16-bit model: 512 fp16 additions lose digits the cosine scores need.
    """
    mask = attention_mask.unsqueeze(-1).to(torch.float32)  # (B, T, 1)
    summed = (last_hidden.to(torch.float32) * mask).sum(dim=1)  # (B, C)
    return summed / mask.sum(dim=1).clamp(min=1.0)


def l2_normalize(vectors: torch.Tensor) -> torch.Tensor:
    return F.normalize(vectors, p=2, dim=-1)


@torch.inference_mode()
def embed_batch(model, batch: Batch, normalize: torch.Tensor) -> torch.Tensor:
    """One forward pass: N texts in R rows -> (N, C) float32 vectors; texts where `normalize` is True get unit length."""
    last_hidden = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
    ).last_hidden_state  # (R, T, C)
    if batch.token_rows is not None:  # packed rows: each text's tokens, gathered into a row of its own
        last_hidden = last_hidden[batch.token_rows, batch.token_columns]  # (N, L, C)
    pooled = average_pool(last_hidden, batch.token_mask)
    return torch.where(normalize.unsqueeze(-1), l2_normalize(pooled), pooled)


def token_limit(config) -> int:
    """Longest input the checkpoint takes, from its config: XLM-R's positions start after the pad id.

    multilingual-e5-large-instruct: 514 - (1 + 1) = 512.
    """
    return config.max_position_embeddings - config.pad_token_id - 1


# --- the device ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceProfile:
    """What the engine does differently per device; a pure value so CPU tests can exercise the CUDA path."""

    device: str
    dtype: torch.dtype
    pad_multiple: int  # tensor cores want dimensions in multiples of 8
    token_budget: int  # padded tokens per micro-batch
    forward_cost: int  # the fixed cost of one forward, in tokens' worth of compute (see batching.plan_batches)
    row_tokens: int = 0  # short texts share rows of up to this many tokens (batching.pack_rows); 0: one per row


# Measured on 2 CPU cores with the full-size model (benchmarks/benchmark.py's machine): throughput peaks at
# 1-2k tokens per forward and falls past 4k (activations leave the cache). A forward's fixed cost is what
# `benchmarks/forward_cost.py` fits from forwards of 32-1,920 tokens: 148-178 ms, 58-66 tokens at 2.5-2.7 ms a
# token (two runs). 32, the earlier value, made the planner cut some groups of 16 short queries (a closed
# loop of 16 clients; 19 of 200 in tests/test_engine.py) into two forwards to save a few pad tokens; the
# second part then waited for the first, and a load test's groups fell out of step. At 64 they stay whole.
# 2,040, not 2,048: the feed-forward activations (tokens x 4,096 x 4 bytes) then stay under 32 MiB, the
# largest block glibc will serve from its heap (memory.reuse_freed_memory). At 2,048 tokens each of them was
# mapped afresh: ~393,000 page faults per forward, which took 6.3-7.7 s against 5.2-5.5 s at 2,040.
CPU_TOKEN_BUDGET = 2040
CPU_FORWARD_COST = 64
# A CPU pays for every pad token, so short texts share rows of up to 128 tokens. A packed row's attention
# spans the whole row, but at 128 tokens that is ~2% of a token's dense-layer FLOPs (4 x 128 x 1024 against
# 24 x 1024^2).
CPU_ROW_TOKENS = 128
# A GPU pays ~5-10 ms per forward in kernel launches whatever the batch, several hundred tokens' worth
# at tens of thousands of tokens/s: it prefers fewer, wider batches. An estimate, not yet measured.
# It packs no rows: a block-diagonal mask takes SDPA off its fastest kernels, a trade not yet measured.
CUDA_FORWARD_COST = 512
# fp16 activations of one XLM-R-large token in flight (hidden, attention and MLP buffers), with headroom
# for the allocator; measured peaks are lower, and an out-of-memory still splits the batch.
CUDA_BYTES_PER_TOKEN = 96 * 1024
CUDA_MAX_TOKEN_BUDGET = 65536


def choose_device(environ: dict[str, str] | None = None) -> str:
    """E5_DEVICE if set (the GPU image sets `cuda`), else CUDA when usable, else the CPU.

    An explicit `cuda` that cannot be used stops setup with the reason (cuda_problem): a GPU image must never
    fall back to the CPU quietly, tens of times slower, with nothing in the logs a model owner would see.
    """
    env = os.environ if environ is None else environ
    requested = env.get("E5_DEVICE", "").strip()
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise WeightsError(f"E5_DEVICE={requested} but CUDA is not available on this machine: {cuda_problem()}")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def driver_cuda_version() -> int:
    """The newest CUDA the NVIDIA driver supports, as CUDA writes it (12020 = 12.2); 0 without a driver."""
    try:
        return int(torch._C._cuda_getDriverVersion())  # cuDriverGetVersion; absent from CPU builds of torch
    except Exception:
        return 0


def cuda_version_text(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"


def cuda_problem(built: str | None = None, driver: int | None = None) -> str:
    """Why CUDA cannot be used here, and the way out; `built` is torch.version.cuda, `driver` driver_cuda_version()."""
    built = torch.version.cuda if built is None else built
    driver = driver_cuda_version() if driver is None else driver
    if not built:
        return f"this torch ({torch.__version__}) is a CPU build; install a CUDA build, or set E5_DEVICE=cpu to serve on the CPU"
    if driver == 0:
        return ("no NVIDIA GPU or driver is visible to this process; start the container with `docker run --gpus all` "
                "(and the NVIDIA Container Toolkit on the host), or set E5_DEVICE=cpu to serve on the CPU, "
                "tens of times slower")
    major, minor = (int(p) for p in built.split(".")[:2])
    if driver < major * 1000 + minor * 10:
        return (f"the NVIDIA driver supports CUDA up to {cuda_version_text(driver)}, but this image's torch was built for "
                f"CUDA {built}; update the host's NVIDIA driver, or set E5_DEVICE=cpu to serve on the CPU")
    return (f"the NVIDIA driver supports CUDA {cuda_version_text(driver)} and torch was built for CUDA {built}, "
            "yet torch finds no usable GPU; check `nvidia-smi` in the container and CUDA_VISIBLE_DEVICES")


def runtime_report(device: str) -> str:
    """For the setup log: the torch build, the CUDA it was built for and, on a GPU, the driver's CUDA and the GPU."""
    text = f"torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none (CPU build)'}"
    if device.startswith("cuda"):
        text += f", driver supports CUDA {cuda_version_text(driver_cuda_version())}, {torch.cuda.get_device_name(device)}"
    return text


def release_cached_memory(device: str) -> None:
    """After an out-of-memory: hand the CUDA caching allocator's free blocks back, so the halves can use them."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def device_profile(device: str, free_bytes: int | None = None, environ: dict[str, str] | None = None) -> DeviceProfile:
    """fp16 with a memory-derived token budget on CUDA; fp32 and a fixed budget on CPU.

    E5_TOKEN_BUDGET overrides the budget on either, E5_ROW_TOKENS the packing (0 turns it off),
    E5_FORWARD_COST the planner's fixed cost per forward (what benchmarks/forward_cost.py measures).
    """
    env = os.environ if environ is None else environ
    if device.startswith("cuda"):
        budget = CUDA_MAX_TOKEN_BUDGET
        if free_bytes is not None:
            budget = max(512, min(CUDA_MAX_TOKEN_BUDGET, free_bytes // 2 // CUDA_BYTES_PER_TOKEN))
        profile = DeviceProfile(device, torch.float16, 8, budget, CUDA_FORWARD_COST)
    else:
        profile = DeviceProfile(device, torch.float32, 1, CPU_TOKEN_BUDGET, CPU_FORWARD_COST, CPU_ROW_TOKENS)
    try:
        budget = env_number(env, "E5_TOKEN_BUDGET")
        row_tokens = env_number(env, "E5_ROW_TOKENS", minimum=0)
        forward_cost = env_number(env, "E5_FORWARD_COST", minimum=0)
    except ValueError as err:
        raise WeightsError(str(err)) from None
    if budget is not None:
        profile = dataclasses.replace(profile, token_budget=budget)
    if row_tokens is not None:
        profile = dataclasses.replace(profile, row_tokens=row_tokens)
    if forward_cost is not None:
        profile = dataclasses.replace(profile, forward_cost=forward_cost)
    return profile


# --- the checkpoint ------------------------------------------------------------------------------------


def check_weights_dir(weights_dir: Path) -> None:
    if not weights_dir.is_dir():
        raise WeightsError(f"weights directory {weights_dir} does not exist; fill it with `{fill_command(weights_dir)}`")
    missing = [name for name in REQUIRED_FILES if not (weights_dir / name).is_file()]
    if missing:
        raise WeightsError(
            f"weights directory {weights_dir} is incomplete: missing {', '.join(missing)}; "
            f"fill it with `{fill_command(weights_dir)}`"
        )


def asked_dimensions(environ: dict[str, str] | None = None) -> int | None:
    """E5_DIMENSIONS, the width a deployment pins its checkpoint to; None when unset.

    Pinned, a checkpoint of another width stops setup instead of serving vectors of a size the caller's index
    cannot hold; unset, the width is the identified model's own (profiles.py).
    """
    env = os.environ if environ is None else environ
    try:
        return env_number(env, "E5_DIMENSIONS")
    except ValueError as err:
        raise WeightsError(str(err)) from None


def expected_dimensions(environ: dict[str, str] | None = None, default: int = DIMENSIONS) -> int:
    """The width a checkpoint must have: E5_DIMENSIONS if set, else `default` (the identified model's width)."""
    asked = asked_dimensions(environ)
    return default if asked is None else asked


def identify_checkpoint(weights_dir: str | Path) -> ModelProfile:
    """Which model the folder holds (profiles.identify): from its manifest, else its config.json's shape."""
    weights_dir = Path(weights_dir)
    check_weights_dir(weights_dir)
    return read_identity(weights_dir)


def load_checkpoint(weights_dir: str | Path, profile: DeviceProfile, dimensions: int | None = None,
                    model_profile: ModelProfile = LARGE_INSTRUCT):
    """Tokenizer and encoder from local files only: safetensors, no remote code, no network.

    `dimensions`: the width asked for (E5_DIMENSIONS); None: `model_profile`'s own width.
    """
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizer
    from transformers.utils import logging as hf_logging

    # The load report and progress bars are noise in a server's logs; real problems raise below.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    weights_dir = Path(weights_dir)
    check_weights_dir(weights_dir)
    try:
        config = XLMRobertaConfig.from_pretrained(weights_dir, local_files_only=True)
    except Exception as err:
        raise WeightsError(f"{weights_dir / 'config.json'} is not a readable XLM-RoBERTa config: {err}") from err
    if config.model_type != "xlm-roberta":
        raise WeightsError(f"{weights_dir} holds a {config.model_type!r} model, not xlm-roberta; fill it with `{fill_command(weights_dir)}`")
    width = model_profile.dimensions if dimensions is None else dimensions
    if config.hidden_size != width:
        raise WeightsError(
            f"{weights_dir} holds a {config.hidden_size}-wide model; {model_profile.short_name} is "
            f"{model_profile.dimensions}-wide: fill it with `{fill_command(weights_dir)}`"
            if dimensions is None else
            f"{weights_dir} holds a {config.hidden_size}-wide model; E5_DIMENSIONS asks for {dimensions}"
        )
    try:
        tokenizer = XLMRobertaTokenizer.from_pretrained(weights_dir, local_files_only=True)
    except Exception as err:
        raise WeightsError(f"{weights_dir / 'tokenizer.json'} could not be loaded: {err}; refill with `{fill_command(weights_dir)}`") from err
    try:
        model = XLMRobertaModel.from_pretrained(
            weights_dir,
            config=config,
            add_pooling_layer=False,  # E5 averages the last hidden states; the pooler is never used
            attn_implementation="sdpa",
            dtype=profile.dtype,
            use_safetensors=True,
            local_files_only=True,
        )
    except Exception as err:
        raise WeightsError(
            f"{weights_dir / 'model.safetensors'} could not be loaded ({type(err).__name__}: {err}); "
            f"it may be truncated or from another model: refill with `{fill_command(weights_dir)}`"
        ) from err
    _check_loaded_weights(model, weights_dir, model_profile)
    return tokenizer, model.to(profile.device).eval()


def _check_loaded_weights(model, weights_dir: Path, model_profile: ModelProfile) -> None:
    # transformers fills tensors absent from the file with random values and only logs it; a checkpoint of
    # another architecture would then embed garbage silently.
    from safetensors import safe_open

    with safe_open(weights_dir / "model.safetensors", framework="pt") as f:
        stored = {k.removeprefix("roberta.") for k in f.keys()}
    expected = {k for k in model.state_dict() if not k.endswith("position_ids")}
    missing = sorted(expected - stored)
    if missing:
        raise WeightsError(
            f"{weights_dir / 'model.safetensors'} lacks {len(missing)} tensors this model needs "
            f"(first: {missing[0]}); it is not a {model_profile.short_name} checkpoint: refill with `{fill_command(weights_dir)}`"
        )
