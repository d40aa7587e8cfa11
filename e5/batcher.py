"""Cross-request batching: concurrent requests share micro-batches, and each keeps its own fate.

Requests validate and tokenize on their own, then queue a `Job`. One loop takes every queued job
(waiting a few milliseconds for requests still tokenizing), plans micro-batches over all their texts with
the same planner as a single request, and runs each forward on one dedicated thread so the event loop
never blocks. Vectors scatter back to each job in its own input order; a job that fails, or whose
request is cancelled, touches no other job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from .engine import Embedder
from .errors import E5Error, EngineError
from .memory import return_freed_memory
from .settings import env_number

log = logging.getLogger("e5")

DEFAULT_MAX_WAIT_S = 0.05  # the longest a forward waits for company (E5_BATCH_WAIT_MS overrides it)
IDLE_TRIM_S = 1.0  # idle this long, the batcher hands freed memory back to the OS


def max_wait_from_env(environ: Mapping[str, str]) -> float:
    """E5_BATCH_WAIT_MS as seconds; unset or empty means the default."""
    ms = env_number(environ, "E5_BATCH_WAIT_MS", float, minimum=0)
    return DEFAULT_MAX_WAIT_S if ms is None else ms / 1000


@dataclass(eq=False)
class Job:
    sequences: list[list[int]]
    normalize: list[bool]
    future: asyncio.Future
    out: torch.Tensor | None = None
    filled: int = 0
    forward_seconds: float = 0.0
    peers: int = 1  # most requests that shared one forward with this one
    forward_rows: list[int] = field(default_factory=list)  # rows of each forward that carried this job

    @property
    def rows_per_forward(self) -> float:
        return sum(self.forward_rows) / len(self.forward_rows) if self.forward_rows else 0.0

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    def fail(self, err: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(err)


@dataclass
class BatcherStats:
    forwards: int = 0
    rows: int = 0
    merged_forwards: int = 0  # forwards that carried texts of more than one request
    failures: int = 0


class Batcher:
    def __init__(
        self,
        embedder: Embedder,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        group_token_cap: int | None = None,
        idle_trim_s: float = IDLE_TRIM_S,
    ):
        self.embedder = embedder
        self.max_wait_s = max_wait_s
        self.idle_trim_s = idle_trim_s
        # One group at most this many real tokens, so a giant request cannot hold newer ones for long.
        self.group_token_cap = group_token_cap or 4 * embedder.profile.token_budget
        self.stats = BatcherStats()
        self.loop = asyncio.get_running_loop()
        self._queue: deque[Job] = deque()
        self._wakeup = asyncio.Event()
        self._arriving = 0  # requests admitted but not yet queued (still validating or tokenizing)
        self._last_forward_s = 0.0
        self._answered = 0  # requests the last group answered: the callers likely to send again soon
        self._queued_since_answer = 0
        self._worked_since_trim = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="e5-forward")
        self._task = self.loop.create_task(self._run(), name="e5-batcher")

    # --- the request side ------------------------------------------------------------------------------

    def arriving(self) -> "_Arrival":
        """Context manager a request holds while it prepares, so the loop knows company is coming."""
        return _Arrival(self)

    async def embed(self, sequences: list[list[int]], normalize: list[bool]) -> tuple[np.ndarray, Job]:
        job = Job(sequences, normalize, self.loop.create_future())
        self._queue.append(job)
        self._queued_since_answer += 1
        self._wakeup.set()
        # Cancelling the awaiting request cancels this future; the loop then skips the job's texts.
        return await job.future, job

    def healthy(self) -> bool:
        return not self._task.done()

    def close(self) -> None:
        self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- the loop --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                if self._worked_since_trim and not await self._woken_within(self.idle_trim_s):
                    # Idle: a good moment to hand freed memory back. Not in the short gaps between a
                    # closed loop's forwards, where the next forward would only fault the pages in again.
                    self._worked_since_trim = False
                    await self.loop.run_in_executor(self._executor, return_freed_memory)
                    continue
                await self._wakeup.wait()
                continue
            await self._wait_for_company()
            group = self._take_group()
            try:
                await self._process(group)
            except Exception as err:  # a bug here fails this group's requests, never the loop
                log.exception("batcher group failed")
                for job in group:
                    job.fail(err if isinstance(err, E5Error) else EngineError(f"{type(err).__name__}: {err}"))
            self._answered = sum(job.future.done() for job in group)
            self._queued_since_answer = 0

    async def _woken_within(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()
        except TimeoutError:
            return False
        return True

    async def _wait_for_company(self) -> None:
        """Hold the first queued job briefly so concurrent requests can join its forward.

        Two signals that company is coming: requests admitted and still tokenizing (wait for them, up to
        max_wait_s), and the callers the last group answered (a closed loop of clients sends again within
        tens of milliseconds; without this wait they split into cohorts that take turns, each forward
        half as full). That second wait ends as soon as as many new jobs have queued as were answered, and
        lasts at most 5% of the last forward, so a lone caller pays at most 5% latency: tens of
        milliseconds on a CPU, under a millisecond on a GPU.
        """
        start = time.monotonic()
        linger = min(self.max_wait_s, 0.05 * self._last_forward_s)
        while True:
            waited = time.monotonic() - start
            if waited >= self.max_wait_s:
                return
            if self._arriving == 0 and (waited >= linger or self._queued_since_answer >= self._answered):
                return
            await asyncio.sleep(0.0005)

    def _take_group(self) -> list[Job]:
        group: list[Job] = []
        tokens = 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # cancelled while queued: leaves at once
                self._queue.popleft()
                continue
            if group and tokens + job.tokens > self.group_token_cap:
                break
            group.append(self._queue.popleft())
            tokens += job.tokens
        return group

    async def _process(self, group: list[Job]) -> None:
        items = [(job, row) for job in group for row in range(len(job.sequences))]
        lengths = [len(job.sequences[row]) for job, row in items]
        # Packing and planning 10,000 short texts takes ~0.1 s: on the forward thread, which would only wait
        # for the plan anyway, not on the event loop that other requests need meanwhile.
        plan = await self.loop.run_in_executor(self._executor, self.embedder.plan, lengths)
        for batch in plan:
            live = [items[i] for i in batch if not items[i][0].future.done()]
            if not live:
                continue
            try:
                vectors, seconds = await self._forward(live)
            except Exception as err:
                await self._retry_apart(live, err)
                continue
            self._scatter(live, vectors, seconds)

    async def _forward(self, items: list[tuple[Job, int]]) -> tuple[torch.Tensor, float]:
        sequences = [job.sequences[row] for job, row in items]
        flags = [job.normalize[row] for job, row in items]

        def run() -> tuple[torch.Tensor, float]:
            start = time.perf_counter()
            vectors = self.embedder.forward(sequences, flags)
            return vectors, time.perf_counter() - start

        return await self.loop.run_in_executor(self._executor, run)

    async def _retry_apart(self, items: list[tuple[Job, int]], err: Exception) -> None:
        """A failed micro-batch: run each request's share alone, so only the one that breaks fails."""
        jobs = list(dict.fromkeys(job for job, _ in items))
        self.stats.failures += 1
        if len(jobs) == 1:
            jobs[0].fail(err if isinstance(err, E5Error) else EngineError(f"{type(err).__name__}: {err}"))
            return
        log.warning("a micro-batch of %d requests failed (%s); retrying each apart", len(jobs), type(err).__name__)
        for job in jobs:
            own = [(j, row) for j, row in items if j is job]
            try:
                vectors, seconds = await self._forward(own)
            except Exception as own_err:
                job.fail(own_err if isinstance(own_err, E5Error) else EngineError(f"{type(own_err).__name__}: {own_err}"))
                continue
            self._scatter(own, vectors, seconds)

    def _scatter(self, items: list[tuple[Job, int]], vectors: torch.Tensor, seconds: float) -> None:
        self._last_forward_s = seconds
        self._worked_since_trim = True
        jobs: dict[Job, tuple[list[int], list[int]]] = {}
        for position, (job, row) in enumerate(items):
            rows, positions = jobs.setdefault(job, ([], []))
            rows.append(row)
            positions.append(position)
        self.stats.forwards += 1
        self.stats.rows += len(items)
        if len(jobs) > 1:
            self.stats.merged_forwards += 1
        for job, (rows, positions) in jobs.items():
            if job.future.done():  # cancelled mid-forward: its share is discarded
                continue
            if job.out is None:
                job.out = torch.empty((len(job.sequences), vectors.shape[1]), dtype=torch.float32, device=vectors.device)
            job.out[torch.tensor(rows, device=vectors.device)] = vectors[torch.tensor(positions, device=vectors.device)]
            job.filled += len(rows)
            job.forward_seconds += seconds
            job.peers = max(job.peers, len(jobs))
            job.forward_rows.append(len(items))
            if job.filled == len(job.sequences):
                job.future.set_result(job.out.cpu().numpy())  # the one device-to-host transfer per request


class _Arrival:
    def __init__(self, batcher: Batcher):
        self.batcher = batcher

    def __enter__(self) -> "_Arrival":
        self.batcher._arriving += 1
        return self

    def __exit__(self, *exc) -> None:
        self.batcher._arriving -= 1
