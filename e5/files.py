"""Bulk input and output files: texts streamed in, vectors streamed out, one chunk held at a time.

Input  (`texts_file`): .txt (one text per line), .jsonl (an object per line with a `text` string),
       .json (a list of strings), .csv (a `text` column). Read as data only: never a path, shell or code.
Output: .npy (float32, shape (N, 1024): the header, then rows appended as they come) or .jsonl
       ({"index": i, "embedding": [...]} per line).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import InputError
from .validation import validate_text

INPUT_SUFFIXES = (".txt", ".jsonl", ".json", ".csv")


def _records(path: Path) -> Iterator[tuple[str, object]]:
    """(where, value) per record, where is a human label such as 'line 12'."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        with open(path, encoding="utf-8", newline="") as f:
            for n, line in enumerate(f, start=1):
                yield f"line {n}", line.rstrip("\r\n")
    elif suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as err:
                    raise InputError(f"`texts_file` line {n} is not valid JSON: {err.msg}", "bad_file") from None
                if not isinstance(record, dict) or "text" not in record:
                    raise InputError(f"`texts_file` line {n} needs an object with a `text` field", "bad_file")
                yield f"line {n}", record["text"]
    elif suffix == ".json":
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except ValueError as err:
                raise InputError(f"`texts_file` is not valid JSON: {err.msg} (line {err.lineno})", "bad_file") from None
        if not isinstance(data, list):
            raise InputError("`texts_file` (.json) must hold a list of strings", "bad_file")
        for i, value in enumerate(data):
            yield f"item {i}", value
    elif suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "text" not in reader.fieldnames:
                raise InputError(f"`texts_file` (.csv) needs a `text` column; found {reader.fieldnames}", "bad_file")
            for n, row in enumerate(reader, start=2):  # line 1 is the header
                yield f"line {n}", row["text"]
    else:
        raise InputError(
            f"`texts_file` must end in {', '.join(INPUT_SUFFIXES)}; got {path.suffix or 'no suffix'!r}", "bad_file"
        )


def read_chunks(path: str | Path, chunk_size: int, max_chars: int) -> Iterator[list[str]]:
    """Validated texts in chunks. An error names the line (or item) of the file it comes from."""
    chunk: list[str] = []
    try:
        for where, value in _records(Path(path)):
            validate_text(value, f"`texts_file` {where}", max_chars)
            chunk.append(value)
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
    except UnicodeDecodeError as err:
        raise InputError(f"`texts_file` is not UTF-8 text (byte {err.start})", "bad_file") from None
    if chunk:
        yield chunk


def count_texts(path: str | Path, max_chars: int) -> int:
    return sum(len(c) for c in read_chunks(path, 4096, max_chars))


class VectorWriter:
    """Writes vectors as they come, so 100,000 texts never sit in memory as JSON."""

    def __init__(self, path: Path, fmt: str, count: int, dimensions: int):
        # Plain appends, not a memory map: a map's dirty pages count as the process's resident memory.
        self.fmt, self.written = fmt, 0
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
        for row in vectors.tolist():
            self._file.write(json.dumps({"index": self.written, "embedding": row}) + "\n")
            self.written += 1

    def close(self) -> None:
        self._file.close()
