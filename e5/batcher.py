"""Cross-request batching: concurrent requests share forwards, none waits long behind another, each keeps its fate.

Requests validate and tokenize on their own, then queue a `Job`. Each job is planned on its own into pieces of
about one forward (the planner of batching.py, longest texts first). The loop then runs rounds of at most
about one forward's worth of tokens: new jobs' first pieces together (concurrent queries share a forward), or
the next pieces of the jobs under way, least served first; when both wait, rounds alternate. Each round's
texts are planned together and run on one dedicated thread, so the event loop never waits on the model. A
query that arrives behind a 4,000-text request therefore waits for the forward under way and at most one more
piece of it, then runs in a forward of its own size; the large request keeps full forwards, and a stream of
queries cannot starve it. Vectors come back to the host on that thread, scatter to each job in input order, and
a job that fails, or whose request is cancelled, touches no other job. If the loop itself dies, every request
it held fails with an engine error, the failure is logged once, and the loop starts again; only a loop that
keeps dying makes the batcher unhealthy.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .engine import Embedder
from .errors import E5Error, EngineError
from .memory import return_freed_memory
from .settings import env_number

log = logging.getLogger("e5")

DEFAULT_MAX_WAIT_S = 0.05  # the longest a forward waits for company (E5_BATCH_WAIT_MS overrides it)
IDLE_TRIM_S = 1.0  # idle this long, the batcher hands freed memory back to the OS
RESTARTS_ALLOWED = 3  # loop deaths within RESTART_WINDOW_S after which the batcher stops and reports unhealthy
RESTART_WINDOW_S = 60.0


def max_wait_from_env(environ: Mapping[str, str]) -> float:
    """E5_BATCH_WAIT_MS as seconds; unset or empty means the default."""
    ms = env_number(environ, "E5_BATCH_WAIT_MS", float, minimum=0)
    return DEFAULT_MAX_WAIT_S if ms is None else ms / 1000


def engine_error(err: BaseException) -> E5Error:
    return err if isinstance(err, E5Error) else EngineError(f"{type(err).__name__}: {err}")


@dataclass(eq=False)
class Job:
    """A request's sequences in the batcher: planned alone into pieces, served round by round, answered by `future`."""

    sequences: list[list[int]]
    normalize: list[bool]
    future: asyncio.Future
    arrival: int = 0  # ties in service go to the earlier job
    pieces: list[list[int]] | None = None  # this job's rows, planned alone into forward-sized pieces
    served: int = 0  # tokens of this job handed to forwards so far: the least served go first
    out: np.ndarray | None = None
    filled: int = 0
    forward_seconds: float = 0.0
    peers: int = 1  # most requests that shared one forward with this one
    forward_rows: list[int] = field(default_factory=list)  # rows of each forward that carried this job
    queued_at: float = field(default_factory=time.perf_counter)
    first_forward_at: float | None = None  # when a forward first carried this job's texts

    @property
    def queue_wait_s(self) -> float:
        """Queued until a forward first carried it: the wait other requests' work caused."""
        return 0.0 if self.first_forward_at is None else self.first_forward_at - self.queued_at

    @property
    def rows_per_forward(self) -> float:
        return sum(self.forward_rows) / len(self.forward_rows) if self.forward_rows else 0.0

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    @property
    def waiting(self) -> bool:
        """Still wants forwards: not answered, failed or cancelled, and pieces left (or not yet planned)."""
        return not self.future.done() and (self.pieces is None or bool(self.pieces))

    def fail(self, err: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(err)


@dataclass
class BatcherStats:
    forwards: int = 0
    rows: int = 0
    merged_forwards: int = 0  # forwards that carried texts of more than one request
    failures: int = 0
    restarts: int = 0  # times the loop died and started again


class Batcher:
    def __init__(
        self,
        embedder: Embedder,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        round_tokens: int | None = None,
        idle_trim_s: float = IDLE_TRIM_S,
        on_idle: Callable[[], None] = return_freed_memory,
        on_forward: Callable[[int, int, float], None] | None = None,
    ):
        self.embedder = embedder
        self.max_wait_s = max_wait_s
        self.idle_trim_s = idle_trim_s
        self.on_idle = on_idle  # run on the forward thread once the batcher has idled for idle_trim_s
        self.on_forward = on_forward  # (texts, tokens, seconds) of each forward that answered, for /metrics
        # A round holds about one forward's worth of real tokens: what a newly queued request waits for.
        self.round_tokens = round_tokens or embedder.profile.token_budget
        self.stats = BatcherStats()
        self.loop = asyncio.get_running_loop()
        self._queue: list[Job] = []
        self._arrivals = itertools.count()
        self._wakeup = asyncio.Event()
        self._arriving = 0  # requests admitted but not yet queued (still validating or tokenizing)
        self._last_forward_s = 0.0
        self._answered = 0  # requests the last round answered: the callers likely to send again soon
        self._queued_since_answer = 0
        self._worked_since_trim = False
        self._last_round_new = False  # rounds alternate between new jobs and jobs under way when both wait
        self._deaths: list[float] = []
        self._broken: BaseException | None = None
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="e5-forward")
        self._start()

    # --- the request side ------------------------------------------------------------------------------

    def arriving(self) -> "_Arrival":
        """Context manager a request holds while it prepares, so the loop knows company is coming."""
        return _Arrival(self)

    async def embed(self, sequences: list[list[int]], normalize: list[bool],
                    on_job: Callable[[Job], None] | None = None) -> tuple[np.ndarray, Job]:
        """The vectors of `sequences` in order, and the job that carried them (`on_job` sees it once queued:
        its `filled` rows and `served` tokens tell a bulk job's progress within a chunk)."""
        if self._broken is not None:
            raise EngineError(f"the batcher stopped after repeated failures (last: {type(self._broken).__name__}: "
                              f"{self._broken}); the container needs a restart", "batcher_failure")
        if self._task.done():  # cancelled from outside (a closing event loop): start it again for this request
            self._start()
        job = Job(sequences, normalize, self.loop.create_future(), arrival=next(self._arrivals))
        if on_job is not None:
            on_job(job)
        self._queue.append(job)
        self._queued_since_answer += 1
        self._wakeup.set()
        # Cancelling the awaiting request cancels this future; the loop then skips the job's texts.
        return await job.future, job

    def trim_soon(self) -> None:
        """Hand freed memory back once idle, also when no forward ran: after a refused or failed request, whose
        inputs (an 80 MB body of tiny texts held the worker at +1.3 GB) are freed only as it ends."""
        self._worked_since_trim = True
        self._wakeup.set()

    def healthy(self) -> bool:
        return self._broken is None and not self._task.done()

    def close(self) -> None:
        self._closed = True
        self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- the loop and its restarts ---------------------------------------------------------------------

    def _start(self) -> None:
        self._task = self.loop.create_task(self._run(), name="e5-batcher")
        self._task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task) -> None:
        """The loop never returns: it died. Fail what it held, say why once, and start it again.

        A cancelled loop is a closing event loop, not a failure: nothing to restart.
        """
        if self._closed or task.cancelled():
            return
        err = task.exception()
        pending = [job for job in self._queue if not job.future.done()]
        self._queue.clear()
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW_S] + [now]
        give_up = len(self._deaths) > RESTARTS_ALLOWED
        log.error("e5: the batcher loop failed (%s: %s); failing %d pending requests and %s", type(err).__name__,
                  err, len(pending), "stopping: it keeps failing" if give_up else "restarting it",
                  exc_info=(type(err), err, err.__traceback__))
        for job in pending:
            job.fail(EngineError(f"the batcher failed ({type(err).__name__}: {err}); send the request again",
                                 "batcher_failure"))
        if give_up:
            self._broken = err
            return
        self.stats.restarts += 1
        self._start()

    async def _run(self) -> None:
        while True:
            # The queue holds every job not yet answered, failed or cancelled, also while its last pieces run,
            # so that a dying loop can fail each of them.
            self._queue = [job for job in self._queue if not job.future.done()]
            if not any(job.waiting for job in self._queue):
                await self._idle()
                continue
            await self._wait_for_company()
            await self._plan_new_jobs()
            pieces = self._take_round()
            jobs = list(dict.fromkeys(job for piece in pieces for job, _ in piece))
            try:
                await self._process(pieces)
            except Exception as err:  # a bug here fails this round's requests, never the loop
                log.exception("batcher round failed")
                for job in jobs:
                    job.fail(engine_error(err))
            self._answered = sum(job.future.done() for job in jobs)
            self._queued_since_answer = 0

    async def _idle(self) -> None:
        self._wakeup.clear()
        if self._worked_since_trim and not await self._woken_within(self.idle_trim_s):
            # Idle: a good moment to hand freed memory back. Not in the short gaps between a closed loop's
            # forwards, where the next forward would only fault the pages in again.
            self._worked_since_trim = False
            await self.loop.run_in_executor(self._executor, self.on_idle)
            return
        await self._wakeup.wait()

    async def _woken_within(self, seconds: float) -> bool:
        # asyncio.timeout, not wait_for: before Python 3.12, wait_for swallows a cancellation that arrives as
        # the event is set, and the loop then waited forever at shutdown (seen: a refusal's trim_soon() as
        # asyncio.run() cancelled the loop).
        try:
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()
        except TimeoutError:
            return False
        return True

    async def _wait_for_company(self) -> None:
        """Hold the first queued job briefly so concurrent requests can join its forward.

        Two signals that company is coming: requests admitted and still tokenizing (wait for them, up to
        max_wait_s), and the callers the last round answered (a closed loop of clients sends again within
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

    # --- rounds ----------------------------------------------------------------------------------------

    async def _plan_new_jobs(self) -> None:
        """Each new job's own plan, cut into pieces of about one forward, on the forward thread.

        Packing and planning 10,000 short texts takes ~0.1 s: there, not on the event loop that other requests
        need meanwhile.
        """
        new = [job for job in self._queue if job.pieces is None and not job.future.done()]
        if new:
            plans = await self.loop.run_in_executor(
                self._executor, lambda: [self.embedder.plan([len(s) for s in job.sequences]) for job in new])
            for job, plan in zip(new, plans):
                job.pieces = plan

    def _take_round(self) -> list[list[tuple[Job, int]]]:
        """The pieces of the next round: new jobs' first pieces, or the next pieces of jobs under way.

        New jobs (not yet served) go together, smallest first piece first, and never fill up with pieces of
        jobs under way: a query that arrives behind a large request gets a forward sized for itself, not a
        share of a full one. Jobs under way go least served first, so large requests take turns. When both
        wait, rounds alternate, so a stream of new queries cannot starve a large request either.
        """
        waiting = [j for j in self._queue if j.waiting and j.pieces is not None]  # queued while planning: next round
        new = [j for j in waiting if j.served == 0]
        under_way = [j for j in waiting if j.served > 0]
        take_new = bool(new) and (not under_way or not self._last_round_new)
        self._last_round_new = take_new
        if take_new:
            order = sorted(new, key=lambda j: (self._piece_tokens(j), j.arrival))
        else:
            order = sorted(under_way, key=lambda j: (j.served, j.arrival))
        room = self.round_tokens
        pieces: list[list[tuple[Job, int]]] = []
        for job in order:
            while job.pieces:
                tokens = self._piece_tokens(job)
                if pieces and tokens > room:
                    break
                pieces.append([(job, row) for row in job.pieces.pop(0)])
                job.served += tokens
                room -= tokens
                if take_new:  # a new job's first piece; the rest of it waits with the jobs under way
                    break
        return pieces

    @staticmethod
    def _piece_tokens(job: Job) -> int:
        return sum(len(job.sequences[row]) for row in job.pieces[0])

    async def _process(self, pieces: list[list[tuple[Job, int]]]) -> None:
        """One piece is a planned forward already; pieces of several jobs are planned together."""
        items = [item for piece in pieces for item in piece]
        plan = [list(range(len(items)))]
        if len(pieces) > 1:
            lengths = [len(job.sequences[row]) for job, row in items]
            plan = await self.loop.run_in_executor(self._executor, self.embedder.plan, lengths)
        for batch in plan:
            live = [items[i] for i in batch if not items[i][0].future.done()]
            if not live:
                continue
            now = time.perf_counter()
            for job, _ in live:
                if job.first_forward_at is None:
                    job.first_forward_at = now
            try:
                vectors, seconds = await self._forward(live)
            except Exception as err:
                await self._retry_apart(live, err)
                continue
            self._scatter(live, vectors, seconds)

    async def _forward(self, items: list[tuple[Job, int]]) -> tuple[np.ndarray, float]:
        sequences = [job.sequences[row] for job, row in items]
        flags = [job.normalize[row] for job, row in items]

        def run() -> tuple[np.ndarray, float]:
            # Timed on the forward thread until the vectors are on the host: a GPU runs its kernels
            # asynchronously, so the time to the launch is not the time of the forward, and the copy to the
            # host is where the thread waits for the device (not the event loop).
            start = time.perf_counter()
            vectors = self.embedder.forward(sequences, flags).cpu().numpy()
            return vectors, time.perf_counter() - start

        return await self.loop.run_in_executor(self._executor, run)

    async def _retry_apart(self, items: list[tuple[Job, int]], err: Exception) -> None:
        """A failed micro-batch: run each job's share alone, so only the one that breaks fails."""
        jobs = list(dict.fromkeys(job for job, _ in items))
        self.stats.failures += 1
        if len(jobs) == 1:
            jobs[0].fail(engine_error(err))
            return
        log.warning("a micro-batch of %d requests failed (%s); retrying each apart", len(jobs), type(err).__name__)
        for job in jobs:
            own = [(j, row) for j, row in items if j is job]
            try:
                vectors, seconds = await self._forward(own)
            except Exception as own_err:
                job.fail(engine_error(own_err))
                continue
            self._scatter(own, vectors, seconds)

    def _scatter(self, items: list[tuple[Job, int]], vectors: np.ndarray, seconds: float) -> None:
        self._last_forward_s = seconds
        self._worked_since_trim = True
        jobs: dict[Job, tuple[list[int], list[int]]] = {}
        for position, (job, row) in enumerate(items):
            rows, positions = jobs.setdefault(job, ([], []))
            rows.append(row)
            positions.append(position)
        self.stats.forwards += 1
        self.stats.rows += len(items)
        if self.on_forward is not None:
            self.on_forward(len(items), sum(len(job.sequences[row]) for job, row in items), seconds)
        if len(jobs) > 1:
            self.stats.merged_forwards += 1
        for job, (rows, positions) in jobs.items():
            if job.future.done():  # cancelled mid-forward: its share is discarded
                continue
            if job.out is None:
                job.out = np.empty((len(job.sequences), vectors.shape[1]), dtype=np.float32)
            job.out[rows] = vectors[positions]
            job.filled += len(rows)
            job.forward_seconds += seconds
            job.peers = max(job.peers, len(jobs))
            job.forward_rows.append(len(items))
            if job.filled == len(job.sequences):
                job.future.set_result(job.out)


class _Arrival:
    def __init__(self, batcher: Batcher):
        self.batcher = batcher

    def __enter__(self) -> "_Arrival":
        self.batcher._arriving += 1
        return self

    def __exit__(self, *exc) -> None:
        self.batcher._arriving -= 1
