"""The embedding engine: texts in, vectors out. No Cog here, so scripts and tests use it directly.

format (instructions.py) -> tokenize once -> pack short texts into rows, plan micro-batches (batching.py)
-> forward, pool, normalize on the device (model.py) -> gather in input order -> one transfer to the host.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import model as m
from .batching import pack_rows, plan_batches
from .errors import EngineError, InputError, item_label
from .memory import reuse_freed_memory
from .profiles import ModelProfile, by_shape
from .windows import Window, split

log = logging.getLogger("e5")


@dataclass(frozen=True)
class Encoded:
    """Validated, tokenized texts: what the batcher takes. Nothing downstream re-checks text."""

    ids: list[list[int]]  # the sequences, each with <s> ... </s> and at most the token limit long
    token_counts: list[int]  # tokens embedded per text (of all its windows)
    truncated: list[bool]  # True where the text had more tokens than the limit and was cut
    windows: list[Window] | None = None  # with long_texts: what each sequence covers (e5/windows.py)

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)


@dataclass(frozen=True)
class Tokens:
    """One text as the tokenizer splits it: ids, each token's (start, stop) characters, marker or not, piece."""

    text: str
    ids: list[int]
    spans: list[tuple[int, int]]
    special: list[bool]
    pieces: list[str]


class Embedder:
    def __init__(self, tokenizer, model, profile: m.DeviceProfile, model_profile: ModelProfile | None = None):
        """`model_profile`: which E5 model this is (its name, width and input recipe); default: recognised
        from the loaded model's config (profiles.by_shape). `load` passes what the checkpoint declares."""
        self.tokenizer = tokenizer
        self.model = model
        self.profile = profile
        self.model_profile = model_profile or by_shape(model.config.to_dict(), "the loaded model's config")
        self.max_tokens = m.token_limit(model.config)
        self.dimensions = model.config.hidden_size
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        self.forward_calls = 0  # forwards run (each half of a split micro-batch too), for metrics and tests

    @classmethod
    def load(cls, weights_dir: str | Path, device: str | None = None, dimensions: int | None = None) -> "Embedder":
        """`dimensions`: the width the checkpoint must have; default E5_DIMENSIONS, else the identified model's."""
        reuse_freed_memory()  # process-wide: activations come from the heap, not fresh pages each forward
        model_profile = m.identify_checkpoint(weights_dir)  # before the weights load: an unknown model stops here
        asked = dimensions or m.asked_dimensions()
        device = device or m.choose_device()
        free = torch.cuda.mem_get_info(torch.device(device))[0] if device.startswith("cuda") else None
        profile = m.device_profile(device, free_bytes=free)
        tokenizer, model = m.load_checkpoint(weights_dir, profile, asked, model_profile)
        return cls(tokenizer, model, profile, model_profile)

    # --- tokenize --------------------------------------------------------------------------------------

    def tokenize(self, texts: list[str], truncate: bool = True, name: str = "texts", offset: int = 0,
                 cut_at: int | None = None, prefix_chars: list[int] | None = None) -> Encoded:
        """One batch call to the fast tokenizer, then right-truncation to the model's limit (or to `cut_at`
        tokens, markers included, where a caller asks for less: Cohere's `max_tokens_per_doc`).

        Cutting the full encoding to `limit - 1` tokens and closing it with </s> gives exactly what
        `tokenizer(..., truncation=True, max_length=512)` gives, and also the full count for the error below.
        """
        if prefix_chars is not None:
            return self._windowed(texts, prefix_chars)
        full = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        limit = self.max_tokens
        if not truncate:
            for i, ids in enumerate(full):
                if len(ids) > limit:
                    raise InputError(
                        f"{item_label(name, offset + i)} has {len(ids)} tokens; the limit is {limit} "
                        f"(set `truncate` to true to embed its first {limit})",
                        "too_many_tokens", (name, offset + i),
                    )
        cut = limit if cut_at is None else max(2, min(cut_at, limit))
        ids = [s if len(s) <= cut else s[: cut - 1] + [self.eos_id] for s in full]
        return Encoded(ids=ids, token_counts=[len(s) for s in ids], truncated=[len(s) > cut for s in full])

    def _windowed(self, texts: list[str], prefix_chars: list[int]) -> Encoded:
        """Every text whole, in windows of the model's limit (e5/windows.py): one tokenization, with the
        character offsets that the windows' spans need."""
        limit = self.max_tokens
        encoding = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False,
                                  return_offsets_mapping=True)
        ids, windows, counts = [], [], []
        for i, (text, encoded, offsets) in enumerate(zip(texts, encoding["input_ids"], encoding["offset_mapping"])):
            if len(encoded) > limit:
                pieces, covered = split(encoded, offsets, prefix_chars[i], limit, i)
            else:  # fits: one window, the text's own ids, as without long_texts
                pieces, covered = [encoded], [Window(i, 0, len(text) - prefix_chars[i], len(encoded))]
            ids += pieces
            windows += covered
            counts.append(sum(len(p) for p in pieces))
        return Encoded(ids=ids, token_counts=counts, truncated=[False] * len(texts), windows=windows)

    def tokens(self, texts: list[str]) -> list["Tokens"]:
        """Each (formatted) text's whole tokenization, with every token's piece, span and whether it is a
        marker: what a user inspects to see what the model reads and where a cut falls. No truncation."""
        enc = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False,
                             return_offsets_mapping=True, return_special_tokens_mask=True)
        return [
            Tokens(text, ids, [tuple(span) for span in spans], [bool(m) for m in mask],
                   self.tokenizer.convert_ids_to_tokens(ids))
            for text, ids, spans, mask in zip(texts, enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"])
        ]

    # --- forward ---------------------------------------------------------------------------------------

    def plan(self, lengths: Sequence[int]) -> list[list[int]]:
        """Micro-batches of indices into `lengths`: short texts packed into rows, rows planned under the budget."""
        p = self.profile
        rows = pack_rows(lengths, p.row_tokens)
        batches = plan_batches([sum(lengths[i] for i in row) for row in rows], p.token_budget, p.pad_multiple, p.forward_cost)
        return [[i for r in batch for i in rows[r]] for batch in batches]

    def forward(self, sequences: list[list[int]], normalize: Sequence[bool]) -> torch.Tensor:
        """Vectors for one micro-batch, on the device, float32. Out of memory: split in half and retry."""
        try:
            return self._forward_once(sequences, normalize)
        except torch.OutOfMemoryError:
            if len(sequences) == 1:
                raise EngineError(
                    f"out of memory embedding a single text of {len(sequences[0])} tokens on {self.profile.device}",
                    "out_of_memory",
                ) from None
        # Retried here, after the `except` block: inside it, the exception's traceback would keep the failed
        # attempt's frames, and with them its activations, alive while the halves run.
        log.warning("out of memory on a batch of %d; splitting", len(sequences))
        m.release_cached_memory(self.profile.device)
        half = len(sequences) // 2
        return torch.cat(
            [
                self.forward(sequences[:half], normalize[:half]),
                self.forward(sequences[half:], normalize[half:]),
            ]
        )

    def _forward_once(self, sequences: list[list[int]], normalize: Sequence[bool]) -> torch.Tensor:
        rows = pack_rows([len(s) for s in sequences], self.profile.row_tokens)
        batch = m.pack_batch(sequences, rows, self.pad_id, self.profile.pad_multiple)
        device = self.profile.device
        flags = torch.tensor(list(normalize), dtype=torch.bool)
        self.forward_calls += 1
        return m.embed_batch(self.model, batch.to(device), flags.to(device))

    def embed(
        self,
        sequences: list[list[int]],
        normalize: bool | Sequence[bool] = True,
    ) -> np.ndarray:
        """All vectors for `sequences`, in their order, as one (N, C) float32 array."""
        flags = [normalize] * len(sequences) if isinstance(normalize, bool) else list(normalize)
        out = torch.empty((len(sequences), self.dimensions), dtype=torch.float32, device=self.profile.device)
        for batch in self.plan([len(s) for s in sequences]):
            vectors = self.forward([sequences[i] for i in batch], [flags[i] for i in batch])
            out[torch.tensor(batch, device=out.device)] = vectors
        return out.cpu().numpy()  # the one device-to-host transfer

    def embed_texts(self, texts: list[str], normalize: bool = True, truncate: bool = True) -> np.ndarray:
        """Texts exactly as given (already formatted) -> vectors. For scripts and benchmarks."""
        return self.embed(self.tokenize(texts, truncate).ids, normalize)

    def warm_up(self) -> float:
        """Run the shapes a first request will hit, so it does not pay for kernel selection."""
        start = time.perf_counter()
        lengths = (8, 64) if self.profile.device == "cpu" else (8, 64, 512)
        for n in lengths:
            self.forward([[0] + [5] * (n - 2) + [self.eos_id]], [True])
        if self.profile.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start
