"""One request path for every caller: validate -> format -> tokenize -> queue -> forward -> encode.

The Cog predictor (predict.py) is only declarations around `EmbeddingService.run`; batch jobs call
`prepare` and `Embedder.embed` the same way on their own thread. Nothing here knows Cog.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .batcher import Batcher, Job
from .budget import MemoryBudget, Reservation, response_tail_s
from .bulk import ResultFile, remove_leftovers
from .encodings import output_array, vector_fields
from .engine import Embedder, Encoded, Tokens
from .errors import EngineError, InputError
from .files import TextsFile, open_texts_file, read_chunks
from .instructions import check_task, format_texts
from .memory import return_freed_memory
from .memory_model import MB, describe, estimate, file_chunk_bytes, file_result_bytes, tokenize_bytes, ways_out
from .ranking import cosine_scores, ranking, round_scores
from .shards import SHARD_BYTES, ShardWriter, rows_per_shard
from .validation import (Limits, Options, Request, check_file_result, check_request_chars, extra_windows,
                         tokenized_chars, validate_file_request, validate_options, validate_request, validate_texts)
from .windows import pool

# Above this many characters, tokenization moves off the event loop so other requests keep flowing.
TOKENIZE_IN_THREAD_CHARS = 50_000
FILE_CHUNK_TEXTS = 4096  # texts read, embedded and written at a time from `texts_file`
# How often the container looks for the files Cog left (as a request ends, or when idle). With spill files
# deleted at SPILL_MIN_AGE_S (e5/bulk.py), /tmp holds at most ~SPILL_MIN_AGE_S + SWEEP_INTERVAL_S of outputs.
SWEEP_INTERVAL_S = 10.0
FILE_WAYS_OUT = "split the file, or embed it with Ray (scripts/ray_embed.py)"


@dataclass
class Response:
    """What a request gets back; the predictor's `Output` has exactly these fields (its annotations say the types)."""

    model: str
    dimensions: int
    encoding_format: str
    embeddings: object  # one vector per text, input order: numbers (float, int8, binary; encodings.py), else []
    token_counts: list[int]
    truncated: list[bool]
    usage: dict  # {"prompt_tokens": n, "total_tokens": n}
    embeddings_base64: list[str] | None = None  # with encoding_format base64: the vectors, instead of embeddings
    document_embeddings: object = None  # with documents: as embeddings
    document_embeddings_base64: list[str] | None = None
    document_token_counts: list[int] | None = None
    document_truncated: list[bool] | None = None
    scores: object = None  # with documents and no top_k: [query][document] cosine, 8 decimals
    ranking: list[list[dict]] | None = None  # with documents: per query [{"index", "score"}], best first, top_k
    embeddings_file: Path | None = None
    windows: list[dict] | None = None  # long_texts windows: per vector {"text", "start", "end", "tokens"}

    def fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def prepare(embedder: Embedder, texts: list[str], options: Options, name: str = "texts", offset: int = 0,
            cut_at: int | None = None) -> Encoded:
    """Validated texts -> the token ids the model sees, written by the loaded model's recipe, cut at its limit
    (or at `cut_at` tokens); with `long_texts`, whole, in windows (e5/windows.py)."""
    formatted = format_texts(texts, options.input_type, options.task, embedder.model_profile)
    if options.long_texts != "truncate":
        prefixes = [len(f) - len(t) for f, t in zip(formatted, texts)]  # every recipe puts the text last
        return embedder.tokenize(formatted, options.truncate, name, offset, prefix_chars=prefixes)
    return embedder.tokenize(formatted, options.truncate, name, offset, cut_at)


def text_vectors(vectors: np.ndarray, encoded: Encoded, options: Options) -> np.ndarray:
    """One vector per text from one per sequence: with `long_texts` mean, each text's windows pooled."""
    if encoded.windows is None or options.long_texts != "mean":
        return vectors
    return pool(vectors, encoded.windows, len(encoded.token_counts), options.normalize)


def window_fields(encoded: Encoded) -> list[dict]:
    """With `long_texts` windows: what each returned vector covers (its text, the characters, its tokens)."""
    return [{"text": w.text, "start": w.start, "end": w.end, "tokens": len(ids)}
            for w, ids in zip(encoded.windows, encoded.ids)]


def usage(*encoded: Encoded | None) -> dict:
    tokens = sum(e.total_tokens for e in encoded if e is not None)
    return {"prompt_tokens": tokens, "total_tokens": tokens}


class EmbeddingService:
    """The engine behind one container: requests in, responses and metrics out."""

    def __init__(self, embedder: Embedder, limits: Limits, max_wait_s: float, budget: MemoryBudget | None = None):
        self.embedder = embedder
        self.limits = limits.check()  # a setting no request could pass stops setup, naming it
        self.max_wait_s = max_wait_s
        self.budget = budget or MemoryBudget()  # the container's memory, shared by every request (e5/budget.py)
        self._batcher: Batcher | None = None
        self._last_sweep = -math.inf  # the first idle sweeps at once
        self._files_in_use: set[Path] = set()  # the `texts_file` of each bulk job running: never swept
        self.on_forward: Callable[[int, int, float], None] | None = None  # each forward's texts, tokens, seconds

    def tidy_up(self) -> None:
        """When the batcher idles: freed memory back to the OS, and the files Cog left if a sweep is due."""
        return_freed_memory()
        if self._sweep_due():
            remove_leftovers(frozenset(self._files_in_use))

    def sweep_if_due(self) -> None:
        """As each request ends, also under load: the files that Cog's server and dead workers left (coglet
        never deletes its output spill files; e5/bulk.py), every SWEEP_INTERVAL_S at most, off the event loop."""
        if self._sweep_due():
            self.batcher().loop.run_in_executor(None, remove_leftovers, frozenset(self._files_in_use))

    def _sweep_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_INTERVAL_S:
            return False
        self._last_sweep = now
        return True

    def batcher(self) -> Batcher:
        # The batcher lives on the event loop that runs requests; a new loop (tests) gets a new one.
        loop = asyncio.get_running_loop()
        if self._batcher is None or self._batcher.loop is not loop:
            if self._batcher is not None:
                self._batcher.close()
            self._batcher = Batcher(self.embedder, max_wait_s=self.max_wait_s, on_idle=self.tidy_up,
                                    on_forward=self.on_forward)
        return self._batcher

    def healthy(self) -> bool:
        return self._batcher is None or self._batcher.healthy()

    async def run(self, request: Request) -> tuple[Response, dict]:
        """One request -> (its response, its metrics: counts and per-phase seconds)."""
        try:
            if request.texts_file is not None:
                return await self.embed_file(request)
            return await self.embed(request)
        except BaseException:  # refused, failed or cancelled: what it held goes back to the OS once idle
            self.batcher().trim_soon()
            raise
        finally:
            self.sweep_if_due()

    async def tokenize(self, texts: object, options: Options, shape: Callable[[Tokens], object] = lambda t: t) -> list:
        """Each text as the model reads it (TEI's /tokenize): checked and written as `run` writes it (the
        instruction on a query), then all its tokens with their spans in the written text, uncut, each text's
        made into the answer by `shape` off the event loop. Its peak is bounded and reserved first, as run's."""
        texts = validate_texts(texts, self.limits)
        options = validate_options(options, self.limits)
        model = self.embedder.model_profile
        check_task(options.task, options.input_type, model)
        check_request_chars(texts, None, options, self.limits, model)
        chars = tokenized_chars(texts, options, model)
        nbytes, what, fewer = tokenize_bytes(chars), f"the tokens of {len(texts)} texts, {chars} characters", \
            "send fewer or shorter texts"
        if nbytes > self.limits.max_request_mb * MB:
            raise InputError(f"the request would hold ~{nbytes // MB} MB at its peak ({what}); the limit is "
                             f"{self.limits.max_request_mb} MB per request (E5_MAX_REQUEST_MB). To fit: {fewer}",
                             "request_too_large")
        reservation = await self.budget.reserve(nbytes, what, fewer)
        formatted = format_texts(texts, options.input_type, options.task, model)
        try:
            answer = await asyncio.to_thread(lambda: [shape(t) for t in self.embedder.tokens(formatted)])
        except BaseException:
            self.budget.release(reservation)
            raise
        self.release_after_response(reservation)
        return answer

    async def reserve(self, nbytes: int, what: str) -> Reservation:
        """Room in the container's memory budget for a file job's peak, before any work (may wait)."""
        return await self.budget.reserve(nbytes, what, FILE_WAYS_OUT)

    def release_after_response(self, reservation: Reservation, entry_bytes: int = 0) -> None:
        """The response is still held after the request returns (Cog encodes, parses and sends it): release
        once that is done, as measured (e5/budget.py)."""
        self.budget.release_later(reservation, response_tail_s(reservation.nbytes, entry_bytes))

    async def embed(self, request: Request) -> tuple[Response, dict]:
        batcher = self.batcher()
        started = time.perf_counter()
        with batcher.arriving():
            request = validate_request(request, self.limits, self.embedder.model_profile)
        parts = estimate(request.shape)
        reservation = await self.budget.reserve(sum(parts.values()), describe(request.shape),
                                                ways_out(request.shape, parts))
        try:
            response, metrics = await self._embed(request, batcher, started, reservation)
        except BaseException:
            self.budget.release(reservation)  # nothing is returned: nothing left to hold
            raise
        self.release_after_response(reservation, parts["ranking"])
        return response, metrics

    async def _embed(self, request: Request, batcher: Batcher, started: float,
                     reservation: Reservation) -> tuple[Response, dict]:
        with batcher.arriving():  # until queued, so the batcher waits briefly for this request
            options = request.options
            queries = await self._prepare(request.texts, options, "texts")
            docs = None
            if request.documents is not None:  # embedded raw, as the model card embeds passages
                cut_at = None if request.document_tokens is None else request.document_tokens + 2  # <s> .. </s>
                docs = await self._prepare(request.documents, as_documents(options), "documents", cut_at)
        tokenized = time.perf_counter()

        sequences = queries.ids + (docs.ids if docs else [])
        vectors, job = await batcher.embed(sequences, [options.normalize] * len(sequences))
        embedded = time.perf_counter()
        n = len(queries.ids)
        encode = vector_fields if request.include_vectors else no_vectors
        query_vectors = text_vectors(vectors[:n], queries, options)
        embeddings, embeddings_base64 = encode(query_vectors, options.encoding_format)
        response = Response(
            model=self.embedder.model_profile.name,  # the checkpoint that answered, not this container's default
            dimensions=int(vectors.shape[1]),
            encoding_format=options.encoding_format,
            embeddings=embeddings,
            embeddings_base64=embeddings_base64,
            token_counts=queries.token_counts,
            truncated=queries.truncated,
            usage=usage(queries, docs),
        )
        if options.long_texts == "windows":
            response.windows = window_fields(queries)
        if docs:
            document_vectors = text_vectors(vectors[n:], docs, options)
            response.document_embeddings, response.document_embeddings_base64 = encode(
                document_vectors, options.encoding_format)
            response.document_token_counts = docs.token_counts
            response.document_truncated = docs.truncated
            # Off the event loop: Q x D scores and their sort take a while for long lists, and other requests wait.
            response.scores, response.ranking = await asyncio.to_thread(score, query_vectors, document_vectors,
                                                                        request.top_k)
        metrics = report(
            texts=len(queries.token_counts) + (len(docs.token_counts) if docs else 0),
            windows=len(sequences),
            tokens=response.usage["total_tokens"],
            truncated_texts=sum(queries.truncated) + (sum(docs.truncated) if docs else 0),
            batch_requests=job.peers,
            texts_per_forward=job.rows_per_forward,
            **self.memory_metrics(reservation),
            tokenize=tokenized - started - reservation.waited_s,
            queue_wait=job.queue_wait_s,
            queue_and_forward=embedded - tokenized,
            forward=job.forward_seconds,
            encode=time.perf_counter() - embedded,
        )
        return response, metrics

    async def embed_file(self, request: Request) -> tuple[Response, dict]:
        """Bulk: a checking pass over the whole file, then read, embed and write it chunk by chunk.

        The first pass refuses a bad record, and with `truncate` off a text past the token limit, before any
        forward runs, and counts the rows the .npy header needs. Each pass holds one chunk at a time, at most
        FILE_CHUNK_TEXTS texts and as many characters as one request may have. A failed or cancelled bulk
        job deletes what it wrote.
        """
        started = time.perf_counter()
        request = validate_file_request(request, self.limits, self.embedder.model_profile)
        in_use = Path(os.path.realpath(request.texts_file))  # as the sweep sees it (e5/bulk.py)
        self._files_in_use.add(in_use)
        try:
            return await self._embed_file_in_use(request, started)
        finally:
            self._files_in_use.discard(in_use)

    async def _embed_file_in_use(self, request: Request, started: float) -> tuple[Response, dict]:
        options = request.options
        texts_file = await asyncio.to_thread(open_texts_file, request.texts_file, self.limits)
        output_format, dimensions = request.output_file_format, self.embedder.dimensions
        total, largest_chunk = await self._check_file(texts_file, options, output_format)
        check_file_result(total, output_format, self.limits, dimensions)
        print(f"e5: texts_file read as {texts_file.describe()}: {total} texts", flush=True)
        # One chunk at a time while embedding, then the result as Cog returns it: the larger of the two.
        reservation = await self.reserve(max(largest_chunk, file_result_bytes(total, output_format, dimensions)),
                                         what=f"a `texts_file` of {total} texts, returned as .{output_format}")
        await asyncio.to_thread(remove_leftovers, frozenset(self._files_in_use))
        result = ResultFile(output_format, total, dimensions)
        try:
            counts, truncated, times = await self._embed_file(texts_file, options, result, total, started)
        except BaseException:  # failed, or cancelled (asyncio.CancelledError)
            self.budget.release(reservation)
            result.discard()
            raise
        self.release_after_response(reservation)
        response = Response(
            model=self.embedder.model_profile.name, dimensions=self.embedder.dimensions, encoding_format="float", embeddings=[],
            token_counts=counts, truncated=truncated, usage={"prompt_tokens": sum(counts), "total_tokens": sum(counts)},
            embeddings_file=result.finish(),
        )
        rows = times.pop("forward_rows")
        return response, report(texts=total, tokens=sum(counts), truncated_texts=sum(truncated),
                                texts_per_forward=sum(rows) / max(len(rows), 1), **self.memory_metrics(reservation),
                                encode=0.0, **times)

    async def embed_file_shards(self, request: Request, folder: Path,
                                shard_bytes: int = SHARD_BYTES) -> AsyncIterator[Path]:
        """The bulk model's path: a file of texts -> shard files of vectors as each fills, then the manifest.

        The same checks as `texts_file` (every record, and the token limit with `truncate` off, before any
        forward), at most `Limits.max_bulk_texts` texts. Memory holds one chunk at a time whatever the number
        of texts (the reservation is the largest chunk's working set); the disk holds the shards the caller
        has not yet removed. A progress line every PROGRESS_S: texts done of all, texts and tokens per second,
        time left.
        """
        started = time.perf_counter()
        if request.texts_file is None:
            raise InputError("`texts_file` is required: upload the file of texts to embed", "missing_texts")
        request = validate_file_request(request, self.limits, self.embedder.model_profile)
        in_use = Path(os.path.realpath(request.texts_file))
        self._files_in_use.add(in_use)
        try:
            await asyncio.to_thread(remove_leftovers, frozenset(self._files_in_use))  # what dead jobs left
            options, output_format = request.options, request.output_file_format
            limits = dataclasses.replace(self.limits, max_file_bytes=self.limits.max_bulk_file_bytes)
            try:
                texts_file = await asyncio.to_thread(open_texts_file, request.texts_file, limits)
                total, largest_chunk = await self._check_file(texts_file, options, output_format, limits,
                                                              limits.max_bulk_texts, "E5_MAX_BULK_TEXTS")
            except InputError as err:  # the byte limit here is the bulk model's own setting
                if err.code != "file_too_large":
                    raise
                raise InputError(str(err).replace("E5_MAX_FILE_BYTES", "E5_MAX_BULK_FILE_BYTES"), err.code) from None
            print(f"e5: texts_file read as {texts_file.describe()}: {total} texts", flush=True)
            dimensions = self.embedder.dimensions
            writer = ShardWriter(folder, output_format, total, dimensions, self.embedder.model_profile.name,
                                 rows_per_shard(output_format, dimensions, shard_bytes))
            # A chunk's working set, and the shard files Cog's server reads whole to upload (two at a time).
            reservation = await self.reserve(largest_chunk + 2 * shard_bytes,
                                             what=f"a bulk job of {total} texts, chunk by chunk")
            try:
                progress = Progress(total, started)
                async for encoded, vectors in self._embedded_chunks(texts_file, options, limits, progress):
                    shards = await asyncio.to_thread(write_shards, writer, vectors, encoded)
                    for shard in shards:
                        yield shard
                    del vectors
                    progress.update(len(encoded.token_counts), encoded.total_tokens)
                if writer.written != total:
                    raise InputError(f"`texts_file` changed while it was read: {total} texts, then {writer.written}",
                                     "bad_file")
                progress.report(final=True)
                yield await asyncio.to_thread(writer.finish)
            finally:
                writer.close()
                self.budget.release(reservation)  # the shards are files: nothing is held past the last one
        finally:
            self._files_in_use.discard(in_use)

    async def _embedded_chunks(self, texts_file: TextsFile, options: Options, limits: Limits, progress: "Progress"):
        """(tokenized chunk, its vectors) for each chunk of the file, in order, through the batcher; a progress
        line every PROGRESS_S also within a chunk (one takes half a minute on a CPU)."""
        chunks = self._file_chunks(texts_file, limits)
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            encoded = await asyncio.to_thread(prepare, self.embedder, chunk, options, "texts_file", 0)
            jobs: list[Job] = []
            embedding = asyncio.ensure_future(
                self.batcher().embed(encoded.ids, [options.normalize] * len(encoded.ids), on_job=jobs.append))
            try:
                while not embedding.done():
                    await asyncio.wait({embedding}, timeout=PROGRESS_S)
                    if not embedding.done() and jobs:
                        progress.report(jobs[0].filled, jobs[0].served)
            except BaseException:
                embedding.cancel()  # cancelled or failed here: the chunk's forwards stop too
                raise
            vectors, _ = embedding.result()
            yield encoded, text_vectors(vectors, encoded, options)
            return_freed_memory()

    def _file_chunks(self, texts_file: TextsFile, limits: Limits | None = None) -> Iterator[list[str]]:
        limits = limits or self.limits
        return read_chunks(texts_file, limits, FILE_CHUNK_TEXTS, limits.max_chars_per_request)

    async def _check_file(self, texts_file: TextsFile, options: Options, output_format: str,
                          limits: Limits | None = None, limit: int | None = None,
                          setting: str = "E5_MAX_FILE_TEXTS") -> tuple[int, int]:
        """Every record valid (and, with `truncate` off, within the token limit): the number of texts, and the
        working set of the largest chunk (file_chunk_bytes)."""
        total, largest = 0, 0
        limit = self.limits.max_file_texts if limit is None else limit
        chunks = self._file_chunks(texts_file, limits)
        model = self.embedder.model_profile
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            chars = tokenized_chars(chunk, options, model)
            windows = extra_windows(chunk, options, model) if options.long_texts != "truncate" else None
            chunk_bytes = file_chunk_bytes(len(chunk), chars, output_format, self.embedder.dimensions, windows)
            largest = max(largest, chunk_bytes)
            if not options.truncate and options.long_texts == "truncate":  # tokenized to count tokens: a chunk's
                # tokens, reserved while they live
                reservation = await self.reserve(chunk_bytes, what=f"checking a chunk of {len(chunk)} texts")
                try:
                    await asyncio.to_thread(prepare, self.embedder, chunk, options, "texts_file", total)
                finally:
                    self.budget.release(reservation)
            total += len(chunk)
            if total > limit:
                raise InputError(f"`texts_file` has more than {limit} texts; the limit is {limit} ({setting})"
                                 + (": split the file and send each part as a job of its own"
                                    if setting == "E5_MAX_BULK_TEXTS" else
                                    "; embed large files with the bulk model (predict_bulk.py)"), "too_many_texts")
        if total == 0:
            raise InputError("`texts_file` holds no texts (it is empty, or only blank lines)", "empty_list")
        return total, largest

    async def _embed_file(self, texts_file: TextsFile, options: Options, result: ResultFile, total: int,
                          started: float) -> tuple[list[int], list[bool], dict]:
        """Chunk by chunk: prepare, embed through the batcher, append to the result; counts and timings."""
        counts: list[int] = []
        truncated: list[bool] = []
        times = {"tokenize": 0.0, "queue_and_forward": 0.0, "forward": 0.0, "forward_rows": []}
        chunks = self._file_chunks(texts_file)
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            t0 = time.perf_counter()
            encoded = await asyncio.to_thread(prepare, self.embedder, chunk, options, "texts_file", len(counts))
            t1 = time.perf_counter()
            vectors, job = await self.batcher().embed(encoded.ids, [options.normalize] * len(encoded.ids))
            times["tokenize"] += t1 - t0
            times["queue_and_forward"] += time.perf_counter() - t1
            times["forward"] += job.forward_seconds
            times["forward_rows"] += job.forward_rows
            vectors = text_vectors(vectors, encoded, options)
            await asyncio.to_thread(result.write, vectors)  # off the event loop: .jsonl rows take a while
            del vectors  # the chunk is on disk: free it before trimming
            return_freed_memory()
            counts += encoded.token_counts
            truncated += encoded.truncated
            rate = len(counts) / (time.perf_counter() - started)
            print(f"e5: {len(counts)}/{total} texts, {rate:.0f} texts/s, ~{(total - len(counts)) / rate:.0f}s left",
                  flush=True)
        if len(counts) != total:  # the .npy header promised `total` rows
            raise InputError(f"`texts_file` changed while it was read: {total} texts, then {len(counts)}", "bad_file")
        return counts, truncated, times

    def memory_metrics(self, reservation: Reservation) -> dict:
        """This request's reservation, the budget in use as it was admitted, and how long it waited for room."""
        return {"memory_reserved_mb": round(reservation.nbytes / MB, 1),
                "memory_in_use_mb": round(reservation.in_use_at_grant / MB, 1), "memory_wait": reservation.waited_s}

    async def _prepare(self, texts: list[str], options: Options, name: str, cut_at: int | None = None) -> Encoded:
        if tokenized_chars(texts, options, self.embedder.model_profile) > TOKENIZE_IN_THREAD_CHARS:
            return await asyncio.to_thread(prepare, self.embedder, texts, options, name, 0, cut_at)
        return prepare(self.embedder, texts, options, name, 0, cut_at)


PROGRESS_S = 5.0  # a bulk job logs its progress this often (Replicate shows a prediction's log live)


def write_shards(writer: ShardWriter, vectors: np.ndarray, encoded: Encoded) -> list[Path]:
    """A chunk's vectors into the shards; a disk that cannot take them fails the job saying so."""
    try:
        return writer.add(vectors, encoded.token_counts, encoded.truncated)
    except OSError as err:
        raise EngineError(f"could not write the vectors to {writer.folder} ({err.strerror or err}): the container's "
                          "temp folder needs room for a few shards (E5_BULK_SHARD_MB each)", "disk_full") from None


class Progress:
    """A bulk job's progress line: texts done of all, texts and tokens per second, time left."""

    def __init__(self, total: int, started: float):
        self.total, self.started, self.texts, self.tokens = total, started, 0, 0
        self.last = time.perf_counter()

    def update(self, texts: int, tokens: int) -> None:
        """A chunk is done."""
        self.texts += texts
        self.tokens += tokens
        if time.perf_counter() - self.last >= PROGRESS_S:
            self.report()

    def report(self, texts_under_way: int = 0, tokens_under_way: int = 0, final: bool = False) -> None:
        """One line: the chunks done plus what the chunk under way has embedded so far."""
        self.last = time.perf_counter()
        seconds = max(self.last - self.started, 1e-9)
        texts, tokens = self.texts + texts_under_way, self.tokens + tokens_under_way
        rate = texts / seconds
        left = f"~{(self.total - texts) / rate:.0f}s left" if rate else "starting"
        print(f"e5: {texts}/{self.total} texts ({100 * texts / self.total:.0f}%), {rate:.0f} texts/s, "
              f"{tokens / seconds:.0f} tokens/s, " + ("done" if final else left), flush=True)


def no_vectors(vectors: np.ndarray, encoding_format: str) -> tuple[list, None]:
    """`include_vectors=False`: the vector fields of a response that leaves them out (`[]`, base64 None)."""
    return [], None


def score(queries: np.ndarray, documents: np.ndarray, top_k: int | None) -> tuple[object, list[list[dict]]]:
    """(scores, ranking): the full [query][document] matrix only without top_k, which bounds the response."""
    scores = cosine_scores(queries, documents)
    return (None if top_k is not None else output_array(round_scores(scores))), ranking(scores, top_k)


def as_documents(options: Options) -> Options:
    return dataclasses.replace(options, input_type="document")


COUNTS = ("texts", "windows", "tokens", "truncated_texts", "batch_requests", "texts_per_forward", "memory_reserved_mb",
          "memory_in_use_mb")


def report(**values) -> dict:
    """Counts as they are and phases as `seconds.<phase>`, for Cog's metrics; and one log line.

    Counts and timings only: users embed private documents, so their text never reaches the logs.
    """
    print("e5: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()))
    # Seconds to 0.1 ms: a web form shows the metrics as they come, and float noise is 16 digits long.
    return {key if key in COUNTS else f"seconds.{key}": round(value, 4) if isinstance(value, float) else value
            for key, value in values.items()}
