"""One memory budget for the whole container: concurrent requests cannot together pass it.

`E5_MAX_REQUEST_MB` bounds one request; the container runs up to 32 at once on each face, and a worker taken by
the kernel's out-of-memory killer is never restarted by Cog 0.23 (docs/reliability.md, "A dead worker"). So
every request reserves its estimated peak (memory_model.py) in one ledger per process before any work, and
gives it back once its response has left (`response_tail_s` after it returns, below). A request that would
pass the budget waits, in arrival order, up to `wait_s`, then is refused naming the budget and the way out; one
larger than the whole budget is refused at once.

Small requests (up to SMALL_REQUEST_BYTES, a query or a few dozen texts) never wait: they are counted in the
ledger but neither wait for room nor take it from large requests, so a query is never held behind a large
request that waits. Together they hold at most slots x SMALL_REQUEST_BYTES (512 MB at 32 slots), which the
margin of the default budget covers.

The default budget is the container's memory (its cgroup limit, else the machine's), minus what the process
holds at rest after warm-up and what Cog's server holds at rest, minus a margin of a fifth (at least 1 GB) for
the estimate's error, the small requests, and the memory Cog's server keeps after large responses.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import BusyError, InputError
from .memory_model import MB
from .settings import env_number

GB = 1000 * MB
SMALL_REQUEST_BYTES = 16 * MB  # a request estimated at most this never waits (a query is ~0.5 MB)
DEFAULT_WAIT_S = 60.0  # E5_MEMORY_WAIT_S: how long a large request waits for room before it is refused
SERVER_AT_REST_BYTES = 256 * MB  # Cog's server (coglet) at rest: ~55 MB measured, rounded up
MARGIN_FRACTION = 0.2
MIN_MARGIN_BYTES = 1 * GB
MIN_BUDGET_BYTES = 256 * MB  # what a container too small for the formula still serves with
# After predict() returns, Cog's worker encodes the response and its server parses it and sends it to the
# client. Measured on the 2-core CPU machine with a local client (`python -m benchmarks.response_memory --tail`,
# docs/reliability.md "One memory budget"): the client had 2,000 float vectors (estimated 0.8 GB) 1.9 s after
# the return, 10,000 (3.9 GB) 10.8 s; 500 x 500 ranked without top_k, mostly {index, score} entries that Cog
# encodes one object at a time (2.1 GB), 12.7 s. A reservation is held past the return for longer than each.
TAIL_BASE_S = 1.5
TAIL_S_PER_GB = 2.5  # numbers and strings
TAIL_S_PER_GB_ENTRIES = 8.0  # ranking entries (6,500 bytes each in the memory model)
UNLIMITED = math.inf


def response_tail_s(nbytes: int, entry_bytes: int = 0) -> float:
    """How long a response of `nbytes` (of which `entry_bytes` are ranking entries) stays in memory after the
    request returns: encoded, parsed and sent. Rounded up from the measurements above."""
    return TAIL_BASE_S + (TAIL_S_PER_GB * (nbytes - entry_bytes) + TAIL_S_PER_GB_ENTRIES * entry_bytes) / GB


# --- the container's memory ------------------------------------------------------------------------------


def container_memory(root: Path = Path("/")) -> tuple[int, str]:
    """(bytes, where the figure came from): the cgroup's memory limit (v2, else v1), else the machine's memory."""
    for path in ("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = (root / path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:  # "max" (v2) or a huge number (v1) mean no limit
            return int(raw), "cgroup limit"
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024, "physical memory"
    except OSError:
        pass
    raise RuntimeError("cannot read the container's memory (no cgroup limit, no /proc/meminfo): set E5_MEMORY_BUDGET_MB")


def resident_bytes(pid: int | str = "self", root: Path = Path("/")) -> int:
    """A process's resident memory now (VmRSS)."""
    for line in (root / f"proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def default_budget(total: int, at_rest: int) -> int:
    margin = max(MIN_MARGIN_BYTES, int(total * MARGIN_FRACTION))
    return max(MIN_BUDGET_BYTES, total - at_rest - SERVER_AT_REST_BYTES - margin)


@dataclass(frozen=True)
class BudgetSettings:
    budget_bytes: int
    wait_s: float
    source: str  # how the budget was set, for the start-up line and /health

    @classmethod
    def from_env(cls, environ: Mapping[str, str], root: Path = Path("/")) -> "BudgetSettings":
        """E5_MEMORY_BUDGET_MB, else the default from this container's memory and this process's at rest."""
        megabytes = env_number(environ, "E5_MEMORY_BUDGET_MB")
        wait = env_number(environ, "E5_MEMORY_WAIT_S", float, minimum=0)
        wait_s = DEFAULT_WAIT_S if wait is None else wait
        if megabytes is not None:
            return cls(megabytes * MB, wait_s, "E5_MEMORY_BUDGET_MB")
        total, where = container_memory(root)
        at_rest = resident_bytes("self", root)
        budget = default_budget(total, at_rest)
        return cls(budget, wait_s, f"{where} {total // MB} MB - at rest {(at_rest + SERVER_AT_REST_BYTES) // MB} MB "
                                   f"- margin {max(MIN_MARGIN_BYTES, int(total * MARGIN_FRACTION)) // MB} MB")


# --- the ledger -------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Reservation:
    nbytes: int
    small: bool
    in_use_at_grant: int = 0  # the ledger's total once this was granted, this request included
    waited_s: float = 0.0
    released: bool = False


class MemoryBudget:
    """The ledger: reserve before work, release once the response has left. One per process, on its event loop."""

    def __init__(self, budget_bytes: float = UNLIMITED, wait_s: float = DEFAULT_WAIT_S, source: str = "unlimited"):
        self.budget_bytes = budget_bytes
        self.wait_s = wait_s
        self.source = source
        self.large_bytes = 0  # reserved by requests over SMALL_REQUEST_BYTES: what the budget admits against
        self.small_bytes = 0
        self.peak_bytes = 0
        self.refused = 0  # refused after waiting (busy)
        self._waiters: deque[tuple[asyncio.Future, int]] = deque()

    @classmethod
    def from_settings(cls, settings: BudgetSettings) -> "MemoryBudget":
        return cls(settings.budget_bytes, settings.wait_s, settings.source)

    @property
    def in_use_bytes(self) -> int:
        return self.large_bytes + self.small_bytes

    @property
    def waiting(self) -> int:
        return sum(not future.done() for future, _ in self._waiters)

    def snapshot(self) -> dict:
        """What /health and the metrics show, in MB."""
        return {
            "budget_mb": None if self.budget_bytes == UNLIMITED else int(self.budget_bytes // MB),
            "in_use_mb": round(self.in_use_bytes / MB, 1),
            "peak_mb": round(self.peak_bytes / MB, 1),
            "waiting": self.waiting,
            "refused_busy": self.refused,
        }

    async def reserve(self, nbytes: int, what: str, ways_out: str) -> Reservation:
        """Room for `nbytes`, now or after waiting in arrival order; refused (InputError) if larger than the whole
        budget, or (BusyError) if no room came within `wait_s`. `what` and `ways_out` go into the messages."""
        if nbytes <= SMALL_REQUEST_BYTES:
            self.small_bytes += nbytes
            self._note_peak()
            return Reservation(nbytes, small=True, in_use_at_grant=self.in_use_bytes)
        if nbytes > self.budget_bytes:
            raise InputError(
                f"the request would hold ~{nbytes // MB} MB at its peak ({what}), more than this container's whole "
                f"memory budget of {self.budget_bytes // MB} MB ({self.source}). To fit: {ways_out}",
                "request_too_large")
        if not self._waiters and self.large_bytes + nbytes <= self.budget_bytes:
            return self._grant(nbytes)
        started = time.monotonic()
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((future, nbytes))
        try:
            async with asyncio.timeout(self.wait_s):
                await asyncio.shield(future)
        except TimeoutError:
            if not future.done():
                future.cancel()
        except BaseException:  # cancelled while waiting: give back a grant that came meanwhile
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                self.release(future.result())
            self._admit()
            raise
        finally:
            self._admit()  # a waiter at the head that left may let the next ones in
        if future.cancelled():
            self.refused += 1
            raise BusyError(
                f"the container's memory is taken by other requests: this one needs ~{nbytes // MB} MB at its peak "
                f"({what}) and waited {time.monotonic() - started:.0f} s (E5_MEMORY_WAIT_S) while "
                f"{self.large_bytes // MB} of the {self.budget_bytes // MB} MB budget ({self.source}; "
                f"E5_MEMORY_BUDGET_MB) stayed reserved. Send it again in a little while, or make it smaller: "
                f"{ways_out}", "memory_busy")
        reservation = future.result()
        reservation.waited_s = time.monotonic() - started
        return reservation

    def release(self, reservation: Reservation) -> None:
        if reservation.released:
            return
        reservation.released = True
        if reservation.small:
            self.small_bytes -= reservation.nbytes
        else:
            self.large_bytes -= reservation.nbytes
        self._admit()

    def release_later(self, reservation: Reservation, seconds: float) -> None:
        """Release once the response has left: `seconds` from now, on this event loop."""
        asyncio.get_running_loop().call_later(seconds, self.release, reservation)

    def _grant(self, nbytes: int) -> Reservation:
        self.large_bytes += nbytes
        self._note_peak()
        return Reservation(nbytes, small=False, in_use_at_grant=self.in_use_bytes)

    def _admit(self) -> None:
        """Grant waiters from the head of the line while they fit; one that does not fit holds those behind it."""
        while self._waiters:
            future, nbytes = self._waiters[0]
            if future.done():  # refused or cancelled: out of the line
                self._waiters.popleft()
                continue
            if self.large_bytes + nbytes > self.budget_bytes:
                return
            self._waiters.popleft()
            future.set_result(self._grant(nbytes))

    def _note_peak(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.in_use_bytes)
