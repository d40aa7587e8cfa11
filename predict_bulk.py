"""Cog interface of the bulk model: a file of up to 1,000,000 texts in, shard files of vectors and a manifest
out, each uploaded by Cog as it is written (`cog build -f cog.bulk.yaml`, README "The bulk model").

Cog's server (coglet 0.23.1) uploads each file a plain generator yields to `--upload-url` (Replicate's file
store) as soon as it is yielded, each within 25 s; an async generator is collected whole first, so this
predict() is a plain generator, and a plain predict() runs one prediction at a time (no @concurrent). The
engine runs on an event loop of its own thread, the same `EmbeddingService` as predict.py's.

As predict.py, this file is read by `cog build`'s static parser: every Input() argument is a literal
(tests/test_cog_schema.py holds it to the rules; its schema is .cog/openapi_schema.bulk.json).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Iterator, Optional

from cog import BasePredictor, FieldInfo, Input, Path
from cog.types import URLPath

from e5 import uploads
from e5.bulk import JobFolder
from e5.shards import shard_bytes_from_env
from e5.startup import load_service
from e5.validation import Options, Request

POLL_S = 0.2  # how often the waiting generator runs Python code, where a cancel (an async exception) lands
KEEP_S = 10.0  # a yielded shard stays this long: Cog's server reads it within milliseconds (coglet 0.23.1)
REMOVE_AFTER_S = 30.0  # the job's folder goes this long after its last file was yielded


async def _close(shards) -> None:
    """End the engine's generator once the step under way has seen its cancel (aclose() refuses to interrupt)."""
    while shards.ag_running:
        await asyncio.sleep(0.01)
    await shards.aclose()


def _given(value):
    """Direct calls leave omitted Input() arguments as FieldInfo; use the declared default instead."""
    return value.default if isinstance(value, FieldInfo) else value


class Predictor(BasePredictor):
    def setup(self) -> None:
        uploads.watch(URLPath, allow_private=uploads.private_urls_allowed())
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="e5-loop", daemon=True).start()
        self.service = load_service()
        self.shard_bytes = shard_bytes_from_env()

    def healthcheck(self) -> bool:
        return self.service.healthy()

    def predict(
        self,
        texts_file: Path = Input(
            accept=".txt,.jsonl,.ndjson,.json,.csv,.gz",
            description="The file of texts to embed, up to 1,000,000: .txt (one per line), .jsonl (a text field per line), .json (a list of strings) or .csv (a text column), each also gzipped. The vectors come back as shard files in input order, with manifest.json listing them.",
        ),
        task: str = Input(
            default="Given a web search query, retrieve relevant passages that answer the query",
            description="For queries (input_type query): a one-sentence instruction saying what they are for, or a preset name (web_search, nq, fever, sts, bitext, ... as the main model). Default: the web_search instruction.",
        ),
        input_type: str = Input(
            default="document",
            choices=["query", "document"],
            description="document (default): each text embedded as it is, as passages for search and RAG are. query: each text embedded as 'Instruct: {task}', a line break, then 'Query: {text}'.",
        ),
        normalize: bool = Input(
            default=True,
            description="true (default): L2-normalize each vector, so that a dot product is the cosine similarity. false: the mean-pooled vectors as they are. Unticked, this box sends nothing and true applies, whatever the greyed box reads: tick it and choose false to turn it off.",
        ),
        truncate: bool = Input(
            default=True,
            description="true (default): cut texts longer than 512 tokens (manifest.json lists their rows; long_texts mean embeds them whole instead). false: such a text fails the job before any embedding, naming its line. Unticked, this box sends nothing and true applies, whatever the greyed box reads: tick it and choose false to refuse long texts.",
        ),
        long_texts: str = Input(
            default="truncate",
            choices=["truncate", "mean"],
            description="What to do with a text longer than the model's 512 tokens. truncate (default): embed its first 512 tokens (see truncate). mean: embed all of it, in overlapping windows of 512 tokens, and store the average of the windows' vectors weighted by their tokens. A text that fits in 512 tokens gets the same vector either way.",
        ),
        output_format: str = Input(
            default="npy",
            choices=["npy", "jsonl"],
            description="npy (default): float32 arrays of up to 12,288 rows each. jsonl: index and embedding per line, up to 3,510 rows a shard (each value to 8 decimals).",
        ),
    ) -> Iterator[Path]:
        texts_file = uploads.DOWNLOADS.claim(_given(texts_file))  # before anything: no other path is read
        options = Options(_given(task), _given(input_type), _given(normalize), _given(truncate), "float",
                          _given(long_texts))
        request = Request(texts_file=texts_file, output_file_format=_given(output_format), options=options)
        folder = JobFolder()
        shards = self.service.embed_file_shards(request, folder.path, self.shard_bytes)
        yielded: list[tuple[float, Path]] = []
        try:
            while (path := self._next(shards)) is not None:
                # Cog's server reads a yielded file milliseconds later, or drops it without a word if it is
                # gone: a shard is removed only once it is KEEP_S old, so the disk holds the last few seconds'.
                while yielded and time.monotonic() - yielded[0][0] > KEEP_S:
                    yielded.pop(0)[1].unlink(missing_ok=True)
                yielded.append((time.monotonic(), path))
                yield Path(path)
        except BaseException:  # failed, or cancelled (cog.CancelationException): no files stay behind
            self._run(_close(shards))
            folder.remove()
            raise
        removal = threading.Timer(REMOVE_AFTER_S, folder.remove)
        removal.daemon = True
        removal.start()

    def _next(self, shards) -> Optional[Path]:
        future = asyncio.run_coroutine_threadsafe(shards.__anext__(), self.loop)
        try:
            return self._wait(future)
        except StopAsyncIteration:
            return None

    def _run(self, coroutine):
        return self._wait(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    @staticmethod
    def _wait(future: concurrent.futures.Future):
        """Wait in short steps: Cog cancels a plain predict() with an exception raised where Python code runs,
        never inside a blocking wait; the engine's work is cancelled with it."""
        try:
            while True:
                try:
                    return future.result(timeout=POLL_S)
                except concurrent.futures.TimeoutError:
                    continue
        except BaseException:
            future.cancel()
            raise
