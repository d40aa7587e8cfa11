"""Cog interface for multilingual-e5-large-instruct: inputs, validation, one call into the engine, output.

The engine (`e5/`) knows nothing of Cog; this file maps Cog inputs to it and its errors to clear messages.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Optional

import numpy as np
from cog import BaseModel, BasePredictor, FieldInfo, Input, Path, concurrent

from e5 import DEFAULT_TASK, MODEL_ID, PRESETS, Embedder, InputError
from e5.batcher import Batcher, max_wait_from_env
from e5.encodings import encode_vectors, output_array
from e5.files import OUTPUT_FORMATS, VectorWriter, count_texts, read_chunks
from e5.memory import return_freed_memory
from e5.instructions import format_texts
from e5.ranking import cosine_scores, rank
from e5.validation import (
    ENCODING_FORMATS,
    Limits,
    validate_bool,
    validate_choice,
    validate_input_type,
    validate_task,
    validate_texts,
    validate_top_k,
)

# Concurrent predictions per container; the batcher merges their texts into shared forwards. A server
# started without `cog build` (python -m cog.server.http) takes its slots from COG_MAX_CONCURRENCY instead.
MAX_CONCURRENCY = 32
DEFAULT_WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
# Above this many characters, tokenization moves off the event loop so other requests keep flowing.
TOKENIZE_IN_THREAD_CHARS = 50_000
FILE_CHUNK_TEXTS = 4096  # texts read, embedded and written at a time from `texts_file`

PRESET_LIST = "; ".join(f"{name}: {p.instruction!r}" for name, p in PRESETS.items())
SYMMETRIC_PRESETS = ", ".join(name for name, p in PRESETS.items() if p.symmetric)


class Output(BaseModel):
    model: str
    dimensions: int
    encoding_format: str
    # Vectors, scores and ranking are numpy arrays here (TupleArray: Cog encodes them several times faster
    # than nested lists, see e5/encodings.py); the schema and the JSON say list.
    embeddings: list  # one entry per text, input order (floats, or the chosen compact encoding)
    token_counts: list[int]  # tokens embedded per text, <s> and </s> included
    truncated: list[bool]  # True where a text was cut to the 512-token limit
    usage: dict  # {"prompt_tokens": n, "total_tokens": n}, texts and documents together
    document_embeddings: Optional[list] = None
    document_token_counts: Optional[list[int]] = None
    document_truncated: Optional[list[bool]] = None
    scores: Optional[list] = None  # [query][document] cosine similarity
    ranking: Optional[list] = None  # [query] document indices, best first (top_k of them)
    embeddings_file: Optional[Path] = None  # with `texts_file`: the vectors as .npy or .jsonl


def _given(value):
    """Direct calls leave omitted Input() arguments as FieldInfo; use the declared default instead."""
    return value.default if isinstance(value, FieldInfo) else value


class Predictor(BasePredictor):
    async def setup(self) -> None:
        start = time.perf_counter()
        weights_dir = os.environ.get("E5_WEIGHTS_DIR") or DEFAULT_WEIGHTS_DIR
        self.limits = Limits.from_env()
        self.max_wait_s = max_wait_from_env(os.environ)
        self.embedder = Embedder.load(weights_dir)
        warm = self.embedder.warm_up()
        self._batcher: Batcher | None = None
        p = self.embedder.profile
        print(
            f"e5: loaded {weights_dir} on {p.device} ({str(p.dtype).removeprefix('torch.')}), "
            f"token budget {p.token_budget}, limit {self.embedder.max_tokens} tokens; "
            f"warm-up {warm:.2f}s, setup {time.perf_counter() - start:.2f}s"
        )

    def batcher(self) -> Batcher:
        # The batcher lives on the event loop that calls predict(); a new loop (tests) gets a new one.
        loop = asyncio.get_running_loop()
        if self._batcher is None or self._batcher.loop is not loop:
            if self._batcher is not None:
                self._batcher.close()
            self._batcher = Batcher(self.embedder, max_wait_s=self.max_wait_s)
        return self._batcher

    def healthcheck(self) -> bool:
        return self._batcher is None or self._batcher.healthy()

    @concurrent(max=MAX_CONCURRENCY)
    async def predict(
        self,
        texts: Optional[list[str]] = Input(
            default=None,
            description="Texts to embed, as a JSON list of strings; vectors come back in the same order. "
            "Each is cut to 512 tokens (see `truncate`). Required.",
        ),
        task: str = Input(
            default=DEFAULT_TASK,
            description="One-sentence instruction for queries (`input_type=query`), or a preset name: "
            f"{PRESET_LIST}. Ignored for documents.",
        ),
        input_type: str = Input(
            default="query",
            choices=["query", "document"],
            description="`query`: embedded as 'Instruct: {task}\\nQuery: {text}'. `document`: embedded as is. "
            "For retrieval embed queries as `query` and passages as `document`. For symmetric tasks "
            f"(similarity, clustering, classification, bitext, duplicates; presets {SYMMETRIC_PRESETS}) "
            "embed every text as `query` with the same task.",
        ),
        normalize: bool = Input(
            default=True, description="L2-normalize each vector, so a dot product is the cosine similarity."
        ),
        truncate: bool = Input(
            default=True,
            description="Cut texts longer than 512 tokens (the flags in `truncated` say which). False: such a "
            "text is an error naming its index and token count, and nothing is embedded.",
        ),
        documents: Optional[list[str]] = Input(
            default=None,
            description="Optional documents to rank against `texts` (the queries). Embedded without "
            "instruction; adds `document_embeddings`, `scores` (cosine, [query][document]) and `ranking`.",
        ),
        top_k: Optional[int] = Input(
            default=None, ge=1, description="With `documents`: keep only the best top_k indices in `ranking`."
        ),
        encoding_format: str = Input(
            default="float",
            choices=list(ENCODING_FORMATS),
            description="`float`: lists of floats. `base64`: little-endian float32 bytes, base64 (as OpenAI). "
            "`int8`: round(127*x). `binary`: sign bits packed MSB-first, 128 values 0-255 per vector.",
        ),
        texts_file: Optional[Path] = Input(
            default=None,
            description="Instead of `texts`, a file of texts for bulk jobs: .txt (one per line), .jsonl (a `text` "
            "field per line), .json (a list of strings) or .csv (a `text` column). The vectors come back as "
            "`embeddings_file`, streamed in chunks; `embeddings` is then empty.",
        ),
        output_file_format: str = Input(
            default="npy",
            choices=list(OUTPUT_FORMATS),
            description="With `texts_file`: `npy` (float32 array, N x 1024) or `jsonl` ({index, embedding} per line).",
        ),
    ) -> Output:
        if _given(texts_file) is not None:
            return await self._predict_file(
                _given(texts), _given(texts_file), _given(task), _given(input_type), _given(normalize),
                _given(truncate), _given(documents), _given(encoding_format), _given(output_file_format),
            )
        batcher = self.batcher()
        started = time.perf_counter()
        with batcher.arriving():  # until queued, so the batcher waits briefly for this request
            args = self._validate(
                _given(texts), _given(task), _given(input_type), _given(normalize), _given(truncate),
                _given(documents), _given(top_k), _given(encoding_format),
            )
            texts, task, input_type, normalize, truncate, documents, top_k, encoding_format = args
            queries = await self._tokenize(format_texts(texts, input_type, task), truncate, "texts")
            docs = await self._tokenize(documents, truncate, "documents") if documents else None
        tokenized = time.perf_counter()

        sequences = queries.ids + (docs.ids if docs else [])
        vectors, job = await batcher.embed(sequences, [normalize] * len(sequences))
        embedded = time.perf_counter()
        n = len(queries.ids)
        output = Output(
            model=MODEL_ID,
            dimensions=int(vectors.shape[1]),
            encoding_format=encoding_format,
            embeddings=output_array(encode_vectors(vectors[:n], encoding_format)),
            token_counts=queries.token_counts,
            truncated=queries.truncated,
            usage={"prompt_tokens": len_tokens(queries, docs), "total_tokens": len_tokens(queries, docs)},
        )
        if docs:
            scores = cosine_scores(vectors[:n], vectors[n:])
            output.document_embeddings = output_array(encode_vectors(vectors[n:], encoding_format))
            output.document_token_counts = docs.token_counts
            output.document_truncated = docs.truncated
            output.scores = output_array(np.round(scores, 6))
            output.ranking = output_array(rank(scores, top_k))
        finished = time.perf_counter()

        self._report(
            texts=len(sequences),
            tokens=len_tokens(queries, docs),
            truncated_texts=sum(queries.truncated) + (sum(docs.truncated) if docs else 0),
            batch_requests=job.peers,
            texts_per_forward=job.rows_per_forward,
            tokenize=tokenized - started,
            queue_and_forward=embedded - tokenized,
            forward=job.forward_seconds,
            encode=finished - embedded,
        )
        return output

    async def _predict_file(self, texts, texts_file, task, input_type, normalize, truncate, documents, encoding_format, output_file_format) -> Output:
        """Bulk: read, embed and write chunk by chunk; one chunk of texts and vectors is alive at a time."""
        started = time.perf_counter()
        if texts is not None or documents is not None:
            raise InputError("give `texts` or `texts_file`, not both (and `documents` only with `texts`)", "conflicting_inputs")
        task, input_type, normalize, truncate, encoding_format = self._validate_options(
            task, input_type, normalize, truncate, encoding_format
        )
        if encoding_format != "float":
            raise InputError("`encoding_format` shapes JSON output; `texts_file` results are float32 files", "conflicting_inputs")
        output_file_format = validate_choice(output_file_format, "output_file_format", OUTPUT_FORMATS)
        # A first pass over the file: it rejects a bad record before any embedding work is spent, and the
        # .npy header needs the row count up front.
        total = await asyncio.to_thread(count_texts, texts_file, self.limits.max_chars_per_text)
        if total == 0:
            raise InputError("`texts_file` holds no texts", "empty_list")
        if total > self.limits.max_file_texts:
            raise InputError(
                f"`texts_file` has {total} texts; the limit is {self.limits.max_file_texts} (E5_MAX_FILE_TEXTS)", "too_many_texts"
            )
        out_path = Path(tempfile.mkdtemp(prefix="e5-")) / f"embeddings.{output_file_format}"
        writer = VectorWriter(out_path, output_file_format, total, self.embedder.dimensions)
        counts: list[int] = []
        truncated: list[bool] = []
        times = {"tokenize": 0.0, "queue_and_forward": 0.0, "forward": 0.0}
        chunks = read_chunks(texts_file, FILE_CHUNK_TEXTS, self.limits.max_chars_per_text)
        try:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                t0 = time.perf_counter()
                formatted = format_texts(chunk, input_type, task)
                encoded = await asyncio.to_thread(self.embedder.tokenize, formatted, truncate, "texts_file", len(counts))
                t1 = time.perf_counter()
                vectors, job = await self.batcher().embed(encoded.ids, [normalize] * len(encoded.ids))
                times["tokenize"] += t1 - t0
                times["queue_and_forward"] += time.perf_counter() - t1
                times["forward"] += job.forward_seconds
                writer.write(vectors)
                del vectors  # the chunk is on disk: free it before trimming
                return_freed_memory()
                counts += encoded.token_counts
                truncated += encoded.truncated
                elapsed = time.perf_counter() - started
                rate = len(counts) / elapsed
                print(f"e5: {len(counts)}/{total} texts, {rate:.0f} texts/s, ~{(total - len(counts)) / rate:.0f}s left", flush=True)
        finally:
            writer.close()
        encode_start = time.perf_counter()
        output = Output(
            model=MODEL_ID, dimensions=self.embedder.dimensions, encoding_format="float", embeddings=[],
            token_counts=counts, truncated=truncated,
            usage={"prompt_tokens": sum(counts), "total_tokens": sum(counts)}, embeddings_file=out_path,
        )
        self._report(texts=total, tokens=sum(counts), truncated_texts=sum(truncated),
                     encode=time.perf_counter() - encode_start, **times)
        return output

    def _validate(self, texts, task, input_type, normalize, truncate, documents, top_k, encoding_format):
        if texts is None:
            raise InputError("`texts` is required: a list of strings to embed", "missing_texts")
        texts = validate_texts(texts, self.limits, "texts")
        task, input_type, normalize, truncate, encoding_format = self._validate_options(
            task, input_type, normalize, truncate, encoding_format
        )
        if documents is not None:
            documents = validate_texts(documents, self.limits, "documents")
            if len(texts) + len(documents) > self.limits.max_texts:
                raise InputError(
                    f"`texts` and `documents` have {len(texts) + len(documents)} texts together; "
                    f"the limit is {self.limits.max_texts} per request",
                    "too_many_texts",
                )
        top_k = validate_top_k(top_k)
        if top_k is not None and documents is None:
            raise InputError("`top_k` applies to `documents`, which is empty", "top_k_without_documents")
        return texts, task, input_type, normalize, truncate, documents, top_k, encoding_format

    def _validate_options(self, task, input_type, normalize, truncate, encoding_format):
        """The options every request has, with or without a file."""
        input_type = validate_input_type(input_type)
        task = validate_task(task, input_type, self.limits)
        normalize = validate_bool(normalize, "normalize")
        truncate = validate_bool(truncate, "truncate")
        encoding_format = validate_choice(encoding_format, "encoding_format", ENCODING_FORMATS)
        return task, input_type, normalize, truncate, encoding_format

    async def _tokenize(self, texts: list[str], truncate: bool, name: str):
        if sum(len(t) for t in texts) > TOKENIZE_IN_THREAD_CHARS:
            return await asyncio.to_thread(self.embedder.tokenize, texts, truncate, name)
        return self.embedder.tokenize(texts, truncate, name)

    def _report(self, **values) -> None:
        """Counts and per-phase seconds as Cog metrics, and one log line.

        Counts and timings only: users embed private documents, so their text never reaches the logs.
        """
        counts = ("texts", "tokens", "truncated_texts", "batch_requests", "texts_per_forward")
        for key, value in values.items():
            self.record_metric(key if key in counts else f"seconds.{key}", value)
        print("e5: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()))


def len_tokens(queries, docs) -> int:
    return queries.total_tokens + (docs.total_tokens if docs else 0)
