"""A bulk job's result file: vectors appended as they come; the file lives no longer than its use.

What Cog does with it (coglet 0.23, read in replicate/cog `crates/coglet-python/src/output.rs` and checked
through the real server in tests/test_bulk_server.py): the `Path` inside our `Output` object is read whole
and turned into a base64 data URL in the worker process right after predict() returns (`encode_files`), with
or without `--upload-url` (seen: only a `Path` returned on its own was uploaded), and the file is never
deleted. So it is deleted here: its folder belongs to the `ResultPath` object the job returns and is removed
when that object is freed, which coglet does once it has encoded the output (a direct caller keeps the file
as long as it keeps the path). A failed or cancelled job removes its folder at once. A worker killed mid-job
(out of memory, SIGKILL) cannot; each folder is locked (flock) by the process that owns it, and every new
job first removes result folders whose owner is gone.

Cog's server keeps copies too: coglet 0.23 writes every output over 6 MiB of JSON (a bulk job's data URL, or
a few thousand vectors) to `/tmp/coglet/predictions/<id>/outputs/spill_<uuid>.json`, reads it back at once,
and never deletes it (crates/coglet/src/worker.rs `build_output_message`, orchestrator.rs `FileOutput`; seen
on the real server). The service deletes such files once they are SPILL_MIN_AGE_S old, long after the server
has read them, as requests end and when idle (service.py `sweep_if_due`, `tidy_up`); the folders stay (a
running prediction writes into its own).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import re
import shutil
import stat
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np

from .encodings import encode_vectors

RESULT_PREFIX = "e5-result-"  # a job's folder in the temp directory: one result file and nothing else
_STAGING_PREFIX = "e5-staging-"  # a folder not yet locked: sweeps never look at these
COGLET_PREDICTIONS = Path("/tmp/coglet/predictions")  # coglet's per-prediction folders (service.rs), fixed
# Cog writes an input given as a data URL to tempfile.NamedTemporaryFile(suffix="file" + its extension)
# (cog/types.py `URLPath.convert`) and deletes it when the prediction ends, but not when it was cancelled: a
# cancelled job's 72 MB upload stayed. Only names of that shape are swept, once no one has them open and they
# are UPLOAD_MIN_AGE_S old. (A URL's download is named after the URL, which no pattern can tell from others'.)
COG_UPLOAD = re.compile(r"tmp[a-z0-9_]{8}file(\.[A-Za-z0-9]+)*")
UPLOAD_MIN_AGE_S = 600.0
SPILL_MIN_AGE_S = 20.0  # coglet reads a spill file as soon as it is written (milliseconds); older, it is done


class VectorWriter:
    """Writes vectors as they come, so 100,000 texts never sit in memory as JSON."""

    def __init__(self, path: Path, fmt: str, count: int, dimensions: int, first_index: int = 0):
        # Plain appends, not a memory map: a map's dirty pages count as the process's resident memory.
        self.fmt, self.written, self.first_index = fmt, 0, first_index  # first_index: a shard's first row
        if fmt == "npy":
            self._file = open(path, "wb")
            header = {"descr": "<f4", "fortran_order": False, "shape": (count, dimensions)}
            np.lib.format.write_array_header_1_0(self._file, header)
        else:
            self._file = open(path, "w", encoding="utf-8")

    def write(self, vectors: np.ndarray) -> None:
        if self.fmt == "npy":
            self._file.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
            self.written += len(vectors)
            return
        for row in encode_vectors(vectors, "float").tolist():  # the inline vectors' 8 decimals
            self._file.write(json.dumps({"index": self.first_index + self.written, "embedding": row}) + "\n")
            self.written += 1

    def close(self) -> None:
        self._file.close()


class ResultPath(pathlib.PosixPath):
    """The path of a finished job's file. Its folder is removed when this object is freed.

    (PosixPath has __slots__ and so cannot be weakly referenced; a subclass without them can. A copy, such
    as the one coglet's `dataclasses.asdict` makes, is a new object with no finalizer: only this one removes.)
    """


class ResultFile:
    """One job's output file, in a private folder in the temp directory that this process locks."""

    def __init__(self, fmt: str, count: int, dimensions: int, root: str | Path | None = None):
        self.folder, self._lock = _locked_folder(Path(root or tempfile.gettempdir()))
        self.path = self.folder / f"embeddings.{fmt}"
        self.writer = VectorWriter(self.path, fmt, count, dimensions)

    def write(self, vectors: np.ndarray) -> None:
        self.writer.write(vectors)

    def finish(self) -> ResultPath:
        """The finished file's path, which owns the folder from now on."""
        self.writer.close()
        path = ResultPath(self.path)
        weakref.finalize(path, _remove, self.folder, self._lock)  # also at interpreter exit
        return path

    def discard(self) -> None:
        """A failed or cancelled job: the partial file goes now (np.load could not read it)."""
        self.writer.close()
        _remove(self.folder, self._lock)


class JobFolder:
    """A private folder in the temp directory for one job's files (the bulk model's shards), locked by this
    process so that a later job removes it if this worker dies (`remove_abandoned_results`)."""

    def __init__(self, root: str | Path | None = None):
        self.path, self._lock = _locked_folder(Path(root or tempfile.gettempdir()))

    def remove(self) -> None:
        _remove(self.path, self._lock)


def remove_leftovers(in_use: frozenset[Path] = frozenset()) -> None:
    """What earlier jobs left: result folders of dead workers, the server's old output spill files, and the
    uploads of cancelled jobs (`in_use`: the inputs of jobs running now)."""
    remove_abandoned_results(tempfile.gettempdir())
    remove_server_spills(COGLET_PREDICTIONS)
    remove_stale_uploads(tempfile.gettempdir(), in_use)


def remove_stale_uploads(root: str | Path, in_use: frozenset[Path] = frozenset(), min_age_s: float = UPLOAD_MIN_AGE_S,
                         now: float | None = None) -> list[Path]:
    """Delete Cog's data-URL input files under `root` that no job uses, this process has not open (a download
    being written is), and that are `min_age_s` old; return them."""
    now = time.time() if now is None else now
    open_now = _open_files()
    removed = []
    for path in Path(os.path.realpath(root)).iterdir():  # real paths, as /proc/self/fd and the service give
        if not COG_UPLOAD.fullmatch(path.name) or path in in_use or path in open_now:
            continue
        with contextlib.suppress(OSError):
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime >= min_age_s:
                path.unlink()
                removed.append(path)
    return removed


def _open_files() -> set[Path]:
    files = set()
    for fd in Path("/proc/self/fd").glob("*"):
        with contextlib.suppress(OSError):
            files.add(Path(os.readlink(fd)))
    return files


def remove_server_spills(root: Path, min_age_s: float = SPILL_MIN_AGE_S, now: float | None = None) -> int:
    """Delete coglet's output spill files under `root` older than `min_age_s`; return the bytes freed."""
    now = time.time() if now is None else now
    freed = 0
    for spill in root.glob("*/outputs/spill_*.json"):
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to delete
            stat = spill.stat()
            if now - stat.st_mtime >= min_age_s:
                spill.unlink()
                freed += stat.st_size
    return freed


def remove_abandoned_results(root: str | Path) -> list[Path]:
    """Remove result folders under `root` that no live process holds (their job's worker died); return them."""
    removed = []
    for folder in Path(root).glob(RESULT_PREFIX + "*"):
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:  # removed meanwhile, or not a folder
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its owner is alive
            os.close(fd)
            continue
        _remove(folder, fd)
        removed.append(folder)
    return removed


def _locked_folder(root: Path) -> tuple[Path, int]:
    """A new folder named RESULT_PREFIX..., locked by this process before it carries that name."""
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=root))
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held until the folder is removed; the lock follows the folder's rename
    folder = staging.with_name(RESULT_PREFIX + staging.name.removeprefix(_STAGING_PREFIX))
    os.rename(staging, folder)
    return folder, fd


def _remove(folder: Path, lock: int) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.close(lock)
