"""Freed memory: reused between forwards, handed back to the operating system when idle."""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Mapping

# glibc's ceiling for the mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): blocks of this size or more
# are always mapped afresh and unmapped on free, whatever mallopt asks.
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
# A thread other than the main one allocates from an arena of heaps of this size (glibc's HEAP_MAX_SIZE, twice
# the ceiling above), each mapped on its own.
THREAD_HEAP_SIZE = 2 * MMAP_THRESHOLD_MAX
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameters, from glibc's malloc.h


def reuse_freed_memory(environ: Mapping[str, str] | None = None) -> bool:
    """Serve blocks of up to 32 MiB from the heap and keep them there when freed; True where it applies.

    By default glibc maps every block above a threshold afresh and unmaps it on free; the threshold only rises
    to the largest block freed so far, a block of exactly that size is still mapped, and a heap whose free top
    passes twice the threshold is trimmed. A forward's activations are blocks of a few sizes, layer after
    layer, so forwards kept faulting them in page by page. Measured on the full-size model (2 cores, a worker
    thread): 50,000-70,000 page faults in a forward of 16 queries (~8% of its time at ~1.6 us a fault), tens
    to a few thousand with fixed thresholds. Memory then stays with the process while it is busy; the batcher
    hands it back after 1 s idle and the bulk path after each chunk (`return_freed_memory`). Elsewhere (musl,
    macOS) this does nothing, and where the environment already tunes glibc's malloc (MALLOC_MMAP_THRESHOLD_
    and the like, or GLIBC_TUNABLES), that choice stands.
    """
    env = os.environ if environ is None else environ
    # MALLOC_ARENA_MAX (cog.yaml sets it) bounds how many arenas there are, not how blocks are mapped or kept.
    tuned = [name for name in env if name.startswith("MALLOC_") and name != "MALLOC_ARENA_MAX"]
    if tuned or any(f"glibc.malloc.{t}" in env.get("GLIBC_TUNABLES", "") for t in ("mmap", "trim", "top_pad")):
        return False
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    # Trimming waits for 1 GiB free at the top of a heap (mallopt takes a C int): in practice, for us.
    # The top pad keeps a thread's heaps once they come free. The trim threshold does not: glibc unmaps a
    # whole free heap (heap_trim in arena.c) unless the pad asks to keep more than a heap holds. Forwards run
    # on the batcher's thread, and their largest activations (up to 32 MiB, one or two to a heap) were mapped
    # and faulted in afresh in every forward: 100,000-250,000 page faults in a forward of 1,200-1,800 tokens
    # on the full-size model, while the same forwards on the main thread reused their memory after the first.
    # The main heap only grows by the pad, and untouched pages cost no memory.
    return all(
        mallopt(parameter, value)
        for parameter, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX),
            (_M_TRIM_THRESHOLD, 1 << 30),
            (_M_TOP_PAD, THREAD_HEAP_SIZE),
        )
    )


def return_freed_memory() -> None:
    """Hand memory that was freed back to the OS (after a bulk chunk, a refused or failed request, or when the
    batcher goes idle).

    glibc keeps freed blocks in per-thread arenas (the tokenizer and forward threads each have one), so
    resident memory kept growing over a long bulk job (~5 KB per text) and over many requests, although
    nothing stays alive between chunks or requests. malloc_trim releases what it can; elsewhere (musl,
    macOS) this does nothing. It cannot shrink an arena whose free memory lies under a live block, and each
    thread that ever allocated may hold one: cog.yaml sets MALLOC_ARENA_MAX=2 so that the event loop's
    to_thread workers share two arenas instead of holding up to eight per core (docs/reliability.md).
    """
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)


@functools.cache
def _libc_function(name: str):
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None
