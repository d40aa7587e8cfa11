"""The model's math and its checkpoint, read top to bottom.

tokens -> pad into a batch -> XLM-RoBERTa forward -> average_pool over the attention mask -> L2 normalize.
Everything here is plain torch and transformers; batching policy lives in `batching.py`, requests in `engine.py`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import WeightsError
from .settings import env_number

MODEL_ID = "intfloat/multilingual-e5-large-instruct"
DIMENSIONS = 1024
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
FILL_COMMAND = "python scripts/download_weights.py"


# --- the math ------------------------------------------------------------------------------------------


def pad_batch(sequences: list[list[int]], pad_id: int, multiple_of: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into (B, T) input_ids and attention_mask, T rounded up to `multiple_of`."""
    width = max(len(s) for s in sequences)
    width = -(-width // multiple_of) * multiple_of
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


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
def embed_batch(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: torch.Tensor) -> torch.Tensor:
    """One forward pass: (B, T) ids -> (B, C) float32 vectors; rows where `normalize` is True get unit length."""
    last_hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, C)
    pooled = average_pool(last_hidden, attention_mask)
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


# Measured on 2 CPU cores with the full-size model (scripts/benchmark.py's machine): throughput peaks at
# 1-2k tokens per forward and falls past 4k (activations leave the cache). A forward's fixed cost (the
# weight reads) is ~0.1 s, about 40 tokens; 32 gave the best mixed-workload throughput among 16-256 in
# back-to-back runs (a CPU pays for every pad token, so it wants little padding even at more forwards).
CPU_TOKEN_BUDGET = 2048
CPU_FORWARD_COST = 32
# A GPU pays ~5-10 ms per forward in kernel launches whatever the batch, several hundred tokens' worth
# at tens of thousands of tokens/s: it prefers fewer, wider batches. An estimate, not yet measured.
CUDA_FORWARD_COST = 512
# fp16 activations of one XLM-R-large token in flight (hidden, attention and MLP buffers), with headroom
# for the allocator; measured peaks are lower, and an out-of-memory still splits the batch.
CUDA_BYTES_PER_TOKEN = 96 * 1024
CUDA_MAX_TOKEN_BUDGET = 65536


def choose_device(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    requested = env.get("E5_DEVICE", "").strip()
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise WeightsError(f"E5_DEVICE={requested} but CUDA is not available on this machine; unset it or use cpu")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_profile(device: str, free_bytes: int | None = None, environ: dict[str, str] | None = None) -> DeviceProfile:
    """fp16 with a memory-derived token budget on CUDA; fp32 and a fixed budget on CPU.

    E5_TOKEN_BUDGET overrides the budget on either.
    """
    env = os.environ if environ is None else environ
    if device.startswith("cuda"):
        budget = CUDA_MAX_TOKEN_BUDGET
        if free_bytes is not None:
            budget = max(512, min(CUDA_MAX_TOKEN_BUDGET, free_bytes // 2 // CUDA_BYTES_PER_TOKEN))
        profile = DeviceProfile(device, torch.float16, 8, budget, CUDA_FORWARD_COST)
    else:
        profile = DeviceProfile(device, torch.float32, 1, CPU_TOKEN_BUDGET, CPU_FORWARD_COST)
    try:
        budget = env_number(env, "E5_TOKEN_BUDGET")
    except ValueError as err:
        raise WeightsError(str(err)) from None
    if budget is not None:
        profile = dataclasses.replace(profile, token_budget=budget)
    return profile


# --- the checkpoint ------------------------------------------------------------------------------------


def check_weights_dir(weights_dir: Path) -> None:
    if not weights_dir.is_dir():
        raise WeightsError(f"weights directory {weights_dir} does not exist; fill it with `{FILL_COMMAND}`")
    missing = [name for name in REQUIRED_FILES if not (weights_dir / name).is_file()]
    if missing:
        raise WeightsError(
            f"weights directory {weights_dir} is incomplete: missing {', '.join(missing)}; "
            f"fill it with `{FILL_COMMAND}`"
        )


def load_checkpoint(weights_dir: str | Path, profile: DeviceProfile):
    """Tokenizer and encoder from local files only: safetensors, no remote code, no network."""
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
        raise WeightsError(f"{weights_dir} holds a {config.model_type!r} model, not xlm-roberta; fill it with `{FILL_COMMAND}`")
    if config.hidden_size != DIMENSIONS:
        raise WeightsError(
            f"{weights_dir} holds a {config.hidden_size}-wide model; multilingual-e5-large-instruct is "
            f"{DIMENSIONS}-wide: fill it with `{FILL_COMMAND}`"
        )
    try:
        tokenizer = XLMRobertaTokenizer.from_pretrained(weights_dir, local_files_only=True)
    except Exception as err:
        raise WeightsError(f"{weights_dir / 'tokenizer.json'} could not be loaded: {err}; refill with `{FILL_COMMAND}`") from err
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
            f"it may be truncated or from another model: refill with `{FILL_COMMAND}`"
        ) from err
    _check_loaded_weights(model, weights_dir)
    return tokenizer, model.to(profile.device).eval()


def _check_loaded_weights(model, weights_dir: Path) -> None:
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
            f"(first: {missing[0]}); it is not a multilingual-e5-large-instruct checkpoint: refill with `{FILL_COMMAND}`"
        )
