"""Cog interface for multilingual-e5-large-instruct: inputs, validation, one call into the engine, output.

The engine (`e5/`) knows nothing of Cog; this file maps Cog inputs to it and its errors to clear messages.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Optional

import numpy as np
from cog import BaseModel, BasePredictor, FieldInfo, Input, concurrent

from e5 import DEFAULT_TASK, MODEL_ID, PRESETS, Embedder, InputError
from e5.batcher import Batcher
from e5.encodings import encode_vectors
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

PRESET_LIST = "; ".join(f"{name}: {p.instruction!r}" for name, p in PRESETS.items())
SYMMETRIC_PRESETS = ", ".join(name for name, p in PRESETS.items() if p.symmetric)


class Output(BaseModel):
    model: str
    dimensions: int
    encoding_format: str
    embeddings: list  # one entry per text, input order (floats, or the chosen compact encoding)
    token_counts: list[int]  # tokens embedded per text, <s> and </s> included
    truncated: list[bool]  # True where a text was cut to the 512-token limit
    usage: dict  # {"prompt_tokens": n, "total_tokens": n}, texts and documents together
    document_embeddings: Optional[list] = None
    document_token_counts: Optional[list[int]] = None
    document_truncated: Optional[list[bool]] = None
    scores: Optional[list] = None  # [query][document] cosine similarity
    ranking: Optional[list] = None  # [query] document indices, best first (top_k of them)


def _given(value):
    """Direct calls leave omitted Input() arguments as FieldInfo; use the declared default instead."""
    return value.default if isinstance(value, FieldInfo) else value


class Predictor(BasePredictor):
    async def setup(self) -> None:
        start = time.perf_counter()
        weights_dir = os.environ.get("E5_WEIGHTS_DIR") or DEFAULT_WEIGHTS_DIR
        self.limits = Limits.from_env()
        self.max_wait_s = float(os.environ.get("E5_BATCH_WAIT_MS", "2")) / 1000
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
    ) -> Output:
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
            embeddings=encode_vectors(vectors[:n], encoding_format),
            token_counts=queries.token_counts,
            truncated=queries.truncated,
            usage={"prompt_tokens": len_tokens(queries, docs), "total_tokens": len_tokens(queries, docs)},
        )
        if docs:
            scores = cosine_scores(vectors[:n], vectors[n:])
            output.document_embeddings = encode_vectors(vectors[n:], encoding_format)
            output.document_token_counts = docs.token_counts
            output.document_truncated = docs.truncated
            output.scores = np.round(scores, 6).tolist()
            output.ranking = rank(scores, top_k).tolist()
        finished = time.perf_counter()

        truncated = sum(queries.truncated) + (sum(docs.truncated) if docs else 0)
        self._record_metrics(
            texts=len(sequences),
            tokens=len_tokens(queries, docs),
            truncated_texts=truncated,
            batch_requests=job.peers,
            tokenize=tokenized - started,
            queue_and_forward=embedded - tokenized,
            forward=job.forward_seconds,
            encode=finished - embedded,
        )
        # Counts and timings only: users embed private documents, so their text never reaches the logs.
        print(
            f"e5: {len(sequences)} texts, {len_tokens(queries, docs)} tokens, {truncated} truncated; "
            f"tokenize {tokenized - started:.3f}s, forward {embedded - tokenized:.3f}s "
            f"(shared with {job.peers - 1} other requests), encode {finished - embedded:.3f}s"
        )
        return output

    def _validate(self, texts, task, input_type, normalize, truncate, documents, top_k, encoding_format):
        if texts is None:
            raise InputError("`texts` is required: a list of strings to embed", "missing_texts")
        texts = validate_texts(texts, self.limits, "texts")
        input_type = validate_input_type(input_type)
        task = validate_task(task, input_type, self.limits)
        normalize = validate_bool(normalize, "normalize")
        truncate = validate_bool(truncate, "truncate")
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
        encoding_format = validate_choice(encoding_format, "encoding_format", ENCODING_FORMATS)
        return texts, task, input_type, normalize, truncate, documents, top_k, encoding_format

    async def _tokenize(self, texts: list[str], truncate: bool, name: str):
        if sum(len(t) for t in texts) > TOKENIZE_IN_THREAD_CHARS:
            return await asyncio.to_thread(self.embedder.tokenize, texts, truncate, name)
        return self.embedder.tokenize(texts, truncate, name)

    def _record_metrics(self, **values) -> None:
        counts = ("texts", "tokens", "truncated_texts", "batch_requests")
        for key, value in values.items():
            self.record_metric(key if key in counts else f"seconds.{key}", value)


def len_tokens(queries, docs) -> int:
    return queries.total_tokens + (docs.total_tokens if docs else 0)
