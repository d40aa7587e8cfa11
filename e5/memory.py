"""Giving freed memory back to the operating system."""

from __future__ import annotations

import ctypes
import functools


def return_freed_memory() -> None:
    """Hand memory that was freed back to the OS (after a bulk chunk, or when the batcher goes idle).

    glibc keeps freed blocks in per-thread arenas (the tokenizer and forward threads each have one), so
    resident memory kept growing over a long bulk job (~5 KB per text) and over many requests, although
    nothing stays alive between chunks or requests.
    malloc_trim releases them; elsewhere (musl, macOS) this does nothing.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
