"""The engine as a Ray Data batch function: a table of texts in, the same table with their vectors out.

    ds.map_batches(EmbedBatch, fn_constructor_kwargs={"weights_dir": ...}, batch_format="pyarrow",
                   compute=ray.data.ActorPoolStrategy(size=N), num_gpus=1)

Ray builds one `EmbedBatch` per actor, which loads the weights once; each call then runs predict()'s request
path: `validate_options` once, `validate_text` on every text, `prepare` (the task's instruction on queries,
truncation at the model's limit) and `Embedder.embed`. A batch job has no concurrent requests to merge into
forwards, so it needs no batcher. Nothing here imports Ray or Cog: scripts/ray_embed.py is the job around it.

Batches are pyarrow Tables, not numpy or pandas: Ray Data's readers produce Arrow blocks, so a table reaches
the actor without a conversion, only the text column becomes Python strings, and the vectors leave as one
`fixed_size_list<float>[1024]` column, a plain Arrow type that any Parquet reader understands (a 2-D numpy
column would be written as Ray's own tensor extension type).

Errors name the record as predict() names an item of a list, `` `path[row]` ``, when the batch carries the
`file` and `row` columns that scripts/ray_embed.py's reader adds; otherwise the index is the row's position in
the batch and the name is the text column's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from .engine import Embedder, Encoded
from .memory import return_freed_memory
from .service import prepare, text_vectors
from .instructions import check_task
from .validation import Limits, Options, validate_options, validate_text

FILE_COLUMN = "file"  # where each row was read from ...
ROW_COLUMN = "row"  # ... and its index there, from 0
OUTPUT_COLUMNS = ("embedding", "token_count", "truncated")


def runs(files: list[str], rows: list[int]) -> list[tuple[str, int, int, int]]:
    """Split a batch into stretches of consecutive rows of one file: (file, its first row, start, stop).

    A batch can span the end of one file and the start of the next; within a stretch, the row of batch
    position i is `first + i - start`, which is how the tokenizer's errors (`name[offset + i]`) number it.
    """
    out: list[tuple[str, int, int, int]] = []
    start = 0
    for i in range(1, len(files) + 1):
        if i == len(files) or files[i] != files[start] or rows[i] != rows[i - 1] + 1:
            out.append((files[start], rows[start], start, i))
            start = i
    return out


def embed_table(embedder: Embedder, batch: pa.Table, options: Options, text_column: str = "text",
                max_chars: int = Limits.max_chars_per_text) -> pa.Table:
    """`batch` with `embedding`, `token_count` and `truncated` added, row for row. `options` are validated."""
    texts = batch.column(text_column).to_pylist()
    pieces: list[Encoded] = []
    for name, first, start, stop in places(batch, text_column):
        for i in range(start, stop):
            validate_text(texts[i], f"`{name}[{first + i - start}]`", max_chars)
        pieces.append(prepare(embedder, texts[start:stop], options, name, first))
    sequences = embedder.embed([ids for e in pieces for ids in e.ids], options.normalize)  # one forward plan
    ends = np.cumsum([len(e.ids) for e in pieces])[:-1]
    vectors = np.concatenate([text_vectors(v, e, options) for v, e in zip(np.split(sequences, ends), pieces)]) \
        if pieces else sequences  # (N, C) float32, in batch order
    token_counts = [n for e in pieces for n in e.token_counts]
    truncated = [t for e in pieces for t in e.truncated]
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), embedder.dimensions)
    columns = (embedding, pa.array(token_counts, pa.int32()), pa.array(truncated, pa.bool_()))
    for name, column in zip(OUTPUT_COLUMNS, columns):
        batch = batch.append_column(name, column)
    return batch


def places(batch: pa.Table, text_column: str) -> list[tuple[str, int, int, int]]:
    """How errors name the batch's rows: by file and row where the reader gave them, else by position."""
    if batch.num_rows == 0:
        return []
    if FILE_COLUMN in batch.column_names and ROW_COLUMN in batch.column_names:
        return runs(batch.column(FILE_COLUMN).to_pylist(), batch.column(ROW_COLUMN).to_pylist())
    return [(text_column, 0, 0, batch.num_rows)]


class EmbedBatch:
    """One per Ray actor: the weights loaded once, then `__call__` on every batch of rows."""

    def __init__(
        self,
        weights_dir: str | Path,
        options: Options = Options(),
        text_column: str = "text",
        limits: Limits | None = None,
        device: str | None = None,
        threads: int | None = None,
    ):
        limits = limits if limits is not None else Limits.from_env()
        # Checked before the weights load: a bad task or input_type fails the job at its first actor.
        self.options = validate_options(options, limits)
        if self.options.long_texts == "windows":  # a table keeps one row per text
            raise ValueError("long_texts windows gives several vectors per text; a batch job writes one per row: "
                             "use mean")
        self.text_column = text_column
        self.max_chars = limits.max_chars_per_text
        if threads:  # otherwise Ray's choice: OMP threads = the actor's whole CPUs, at least 1
            torch.set_num_threads(threads)
        self.embedder = Embedder.load(weights_dir, device)
        # And a task the loaded model cannot use (multilingual-e5-small takes none), before the first batch.
        check_task(self.options.task, self.options.input_type, self.embedder.model_profile)

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = embed_table(self.embedder, batch, self.options, self.text_column, self.max_chars)
        # As the `texts_file` path does after each chunk: glibc keeps what a batch's forwards freed in
        # per-thread arenas, and the actor's memory would grow with every batch.
        return_freed_memory()
        return out
