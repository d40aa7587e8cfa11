"""`texts_file`: the texts of a bulk job, read in bounded memory, every record checked, errors that say where.

Formats: .txt (a text per line), .jsonl (an object with a `text` string per line), .json (a list of strings),
.csv (a `text` column), each also gzipped (`.txt.gz`, ...), read as a stream. The name gives the format. Where
the name says nothing (no suffix, `.bin`, a bare `.gz`: Cog names an upload so when its MIME type is
application/octet-stream, application/x-ndjson or application/gzip) the first bytes do: `[` is .json, `{` is
.jsonl, a first line of two or more comma-separated fields, one of them `text`, is a .csv header, anything else
.txt (so a lone `text` line is a text). Gzip is known by its magic bytes; a gzip file may hold at most
MAX_GZIP_MEMBERS members (empty ones cost time and yield nothing, so the byte limit alone misses them).

Errors name the line, item or offset and never quote the file's content: coglet logs them.

Memory: the file is read in 64 KiB pieces. A line, CSV record or JSON string is held only up to
`record_limit(max_chars)` bytes and refused as soon as it passes that; the stream (decompressed, for gzip) is
refused past `max_file_bytes`. So no file makes memory grow with its size.

Rows: the result's row i is the i-th record: line i+1 of a .txt or .jsonl, item i of a .json, the i-th record
after a .csv's header. So a blank line is refused, except at the end of the file, where editors leave them.
Files are data only: never a path, shell or code.
"""

from __future__ import annotations

import codecs
import csv
import errno
import json
import os
import re
import stat
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import InputError
from .validation import Limits, validate_text

FORMATS = ("txt", "jsonl", "json", "csv")
SUFFIX_FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
# What Cog names an upload whose MIME type maps to none of ours (octet-stream -> .bin, x-ndjson -> nothing):
# the content decides. Any other suffix (.tsv, .xlsx, ...) is refused rather than guessed at.
UNNAMED_SUFFIXES = ("", ".bin")
SENT_AS = "send .txt, .jsonl, .json or .csv, or one of them gzipped"
PIECE_BYTES = 64 * 1024
GZIP_MAGIC = b"\x1f\x8b"
# Members one gzip file may hold: `cat a.gz b.gz` makes two, bgzip one per 64 KiB (~3,000 for 200 MB); empty
# ones (20 bytes each) decompress to nothing, and 70 MB of them cost ~50 s of CPU a pass.
MAX_GZIP_MEMBERS = 10_000
ZIP_MAGIC = b"PK\x03\x04"
BLANK = object()  # a blank line: refused, unless only blank lines follow it


def record_limit(max_chars: int) -> int:
    """Bytes one line, record or JSON string may take: a text of `max_chars` characters written as JSON with
    `\\uXXXX` escapes (json.dumps' default for non-ASCII: 12 bytes for a character past U+FFFF, an emoji,
    which is one character of `texts`), plus 64 KiB for the record's other fields."""
    return 12 * max_chars + 64 * 1024


@dataclass(frozen=True)
class TextsFile:
    """An uploaded file, its size checked and its format decided; nothing of it held."""

    path: Path
    format: str  # one of FORMATS
    compressed: bool  # gzip, known by its magic bytes
    sniffed: bool  # the format came from the content, not the name

    def describe(self) -> str:
        how = "sniffed from its first bytes" if self.sniffed else "from its name"
        return f"{'gzipped ' if self.compressed else ''}.{self.format}, {how}"


def open_texts_file(path: str | Path, limits: Limits) -> TextsFile:
    """Check the name and size and decide the format, reading only the first piece of the file."""
    path = Path(path)
    suffix = Path(path.name.lower().removesuffix(".gz")).suffix
    if suffix not in SUFFIX_FORMATS and suffix not in UNNAMED_SUFFIXES:
        raise InputError(f"`texts_file` is a {suffix} file; {SENT_AS}", "bad_file")
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        magic = f.read(4)
    if size > limits.max_file_bytes:
        raise InputError(
            f"`texts_file` has {size} bytes; the limit is {limits.max_file_bytes} (E5_MAX_FILE_BYTES)", "file_too_large"
        )
    if magic.startswith(ZIP_MAGIC):
        raise InputError(f"`texts_file` is a zip archive; {SENT_AS} (.gz)", "bad_file")
    if magic.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode text"
        raise InputError("`texts_file` is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8", "bad_file")
    compressed = magic.startswith(GZIP_MAGIC)
    if suffix in SUFFIX_FORMATS:
        return TextsFile(path, SUFFIX_FORMATS[suffix], compressed, sniffed=False)
    with _Source(path, compressed, limits.max_file_bytes) as source:
        return TextsFile(path, sniff_format(source.first), compressed, sniffed=True)


def open_regular(path: Path) -> BinaryIO:
    """The file for reading, only if `path` itself is a regular file: a link (the last part of the path: so
    `/proc/self/fd/N` too), FIFO, device or socket is refused without being followed, read or waited on
    (O_NONBLOCK: opening a FIFO with no writer would otherwise hang). uploads.py decides which paths a request
    may name at all; this is the second check, on what is actually opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        why = "it is a link" if err.errno == errno.ELOOP else err.strerror
        raise InputError(f"`texts_file` cannot be read: {why}", "bad_file") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError("`texts_file` is not a regular file", "bad_file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def sniff_format(head: bytes) -> str:
    """The format of a file whose name does not say, from its first bytes (BOM already removed)."""
    first = head.lstrip(b" \t\r\n")[:1]
    if first == b"[":
        return "json"
    if first == b"{":
        return "jsonl"
    first_line = re.split(rb"\r\n|\r|\n", head, maxsplit=1)[0].decode("utf-8", "replace")
    # A header of two or more columns, one named `text`. A lone `text` line is a text file's first text: read
    # as CSV it would be dropped as a header and every later line cut at its first comma.
    header = next(csv.reader([first_line]), [])
    return "csv" if len(header) >= 2 and "text" in header else "txt"


def read_chunks(texts_file: TextsFile, limits: Limits, max_texts: int, max_chars: int) -> Iterator[list[str]]:
    """The file's texts, each checked, in chunks of at most `max_texts` texts and `max_chars` characters.

    An error names the line (or item) it comes from; for a sniffed file, also how it was read.
    """
    with _Source(texts_file.path, texts_file.compressed, limits.max_file_bytes) as source:
        chunk: list[str] = []
        chars = 0
        try:
            for where, text in _records(texts_file.format, source, limits.max_chars_per_text):
                validate_text(text, f"`texts_file` {where}", limits.max_chars_per_text)
                if chunk and (len(chunk) == max_texts or chars + len(text) > max_chars):
                    yield chunk
                    chunk, chars = [], 0
                chunk.append(text)
                chars += len(text)
        except InputError as err:
            if not texts_file.sniffed:
                raise
            raise InputError(f"{err} (read as {texts_file.describe()})", err.code) from None
        if chunk:
            yield chunk


# --- bytes ------------------------------------------------------------------------------------------------


class _Source:
    """The file's bytes in pieces, decompressed if gzip, refused past the byte limit or at a NUL byte."""

    def __init__(self, path: Path, compressed: bool, max_bytes: int):
        self.compressed, self.max_bytes = compressed, max_bytes
        self.offset = 0  # bytes of the (decompressed) stream read so far
        self._newlines = 0  # in those bytes, to say which line a NUL byte is on
        self._raw = open_regular(path)
        self._stream = _Gunzip(self._raw) if compressed else self._raw
        # A UTF-8 byte-order mark (Excel's "CSV UTF-8") is not part of the first text.
        try:
            first = self._read()
        except InputError:
            self.close()
            raise
        self.start = len(codecs.BOM_UTF8) if first.startswith(codecs.BOM_UTF8) else 0
        self.first = first[self.start :]
        self._pending = self.first

    def read(self) -> bytes:
        """The next piece; b"" at the end."""
        if self._pending:
            piece, self._pending = self._pending, b""
            return piece
        return self._read()

    def where(self, offset: int) -> str:
        return f"offset {offset} of the {'decompressed ' if self.compressed else ''}file"

    def _read(self) -> bytes:
        try:
            piece = self._stream.read(PIECE_BYTES)
        except (EOFError, zlib.error) as err:  # a cut-off stream, or bytes that are not gzip
            raise InputError(f"`texts_file` is not a valid gzip stream at byte {self._stream.offset} of the file "
                             f"(after {self.offset} bytes decompressed): {err}", "bad_file") from None
        nul = piece.find(b"\0")
        if nul >= 0:
            line = self._newlines + piece.count(b"\n", 0, nul) + 1
            raise InputError(
                f"`texts_file` line {line} holds a NUL byte ({self.where(self.offset + nul)}): binary data, not "
                f"text; {SENT_AS}",
                "bad_file",
            )
        self._newlines += piece.count(b"\n")
        self.offset += len(piece)
        if self.offset > self.max_bytes:
            raise InputError(
                f"`texts_file` decompresses to more than {self.max_bytes} bytes; the limit is {self.max_bytes} "
                "(E5_MAX_FILE_BYTES)",
                "file_too_large",
            )
        return piece

    def __enter__(self) -> "_Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stream.close()
        self._raw.close()


class _Gunzip:
    """A gzip file's decompressed bytes, member after member, knowing the compressed offset (for errors) and
    refusing more than MAX_GZIP_MEMBERS members. (gzip.GzipFile reads any number of members inside one
    read() call, and reports no offset.)"""

    def __init__(self, raw):
        self.raw = raw
        self.offset = 0  # compressed bytes consumed
        self.members = 1
        self._z = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer around deflate data
        self._input = b""

    def read(self, size: int) -> bytes:
        while True:
            if self._z.eof:  # a member ended: another one follows, or zero padding, or the end
                if not self._input.strip(b"\0"):
                    self.offset += len(self._input)
                    self._input = self.raw.read(PIECE_BYTES)
                    if not self._input:
                        return b""
                    continue
                padding = len(self._input) - len(self._input.lstrip(b"\0"))
                self.offset += padding
                self._input = self._input[padding:]
                self.members += 1
                if self.members > MAX_GZIP_MEMBERS:
                    raise InputError(f"`texts_file` holds more than {MAX_GZIP_MEMBERS} gzip members (at byte "
                                     f"{self.offset}); compress it as one stream (gzip file.txt)", "bad_file")
                self._z = zlib.decompressobj(wbits=31)
            if not self._input:
                self._input = self.raw.read(PIECE_BYTES)
                if not self._input:
                    raise EOFError("the file ends inside a gzip member (cut off?)")
            before = len(self._input)
            out = self._z.decompress(self._input, size)
            self._input = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
            self.offset += before - len(self._input)
            if out:
                return out

    def close(self) -> None:
        self.raw.close()


class _Window:
    """The unread bytes `buf[pos:]` of a source; `base` is the stream offset of `buf[0]`."""

    def __init__(self, source: _Source, max_chars: int):
        self.source, self.max_chars, self.max_bytes = source, max_chars, record_limit(max_chars)
        self.buf, self.pos, self.base, self.eof = b"", 0, source.start, False
        self._found: dict[bytes, int] = {}

    def more(self) -> bool:
        """Append the next piece, dropping what was consumed; False at the end of the stream."""
        if not self.eof:
            piece = self.source.read()
            self.eof = not piece
            self.base += self.pos
            self.buf, self.pos = self.buf[self.pos :] + piece, 0
            self._found = {}
        return not self.eof

    def find(self, byte: bytes) -> int:
        """The index in `buf` of the next `byte` at or after `pos`, or -1. Remembered until `buf` changes, so
        that finding one line break at a time does not rescan the rest of the buffer for a byte it lacks."""
        found = self._found.get(byte)
        if found is None or -1 < found < self.pos:
            found = self._found[byte] = self.buf.find(byte, self.pos)
        return found

    def offset(self, i: int) -> int:
        return self.base + i

    def too_long(self, what: str, why: str = "") -> InputError:
        return InputError(
            f"`texts_file` {what} is over {self.max_bytes} bytes{why}; the limit is {self.max_chars} characters per text "
            f"(E5_MAX_TEXT_CHARS), {self.max_bytes} bytes per line or record",
            "text_too_long",
        )


def _lines(window: _Window, universal: bool) -> Iterator[tuple[int, int, bytes]]:
    """(line number from 1, stream offset of its first byte, its bytes without the break).

    `universal`: `\\r\\n`, `\\r` and `\\n` each end a line (.txt, .csv); else only `\\n` (.jsonl, where a `\\r`
    before it is JSON whitespace). A line past the window's byte limit is refused once that much is read.
    Breaks are found with bytes.find (memchr): a regex alternation scans ~10x slower.
    """
    number = 0
    while True:
        newline = window.find(b"\n")
        cr = window.find(b"\r") if universal else -1
        if cr != -1 and (newline == -1 or cr < newline):
            end, after = cr, cr + 1 + (newline == cr + 1)
            wait = after == len(window.buf) and not window.eof  # the \r may be half of a \r\n
        else:
            end, after, wait = newline, newline + 1, False
        if end == -1 or wait:
            if len(window.buf) - window.pos > window.max_bytes:
                raise window.too_long(f"line {number + 1}")
            if window.more() or wait:
                continue
            if window.pos == len(window.buf):
                return
            end = after = len(window.buf)  # the last line, without a break
        number += 1
        if end - window.pos > window.max_bytes:
            raise window.too_long(f"line {number}")
        start = window.pos
        window.pos = after
        yield number, window.offset(start), window.buf[start:end]


def _decode(data: bytes, where: str, offset: int, source: _Source) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"`texts_file` {where} is not UTF-8 text: byte 0x{data[err.start]:02X} at {source.where(offset + err.start)}",
            "bad_file",
        ) from None


# --- records ----------------------------------------------------------------------------------------------


def _records(fmt: str, source: _Source, max_chars: int) -> Iterator[tuple[str, object]]:
    """(where, value) per record, where is 'line 12' or 'item 11'; blank lines only at the end."""
    read = {"txt": _txt_records, "jsonl": _jsonl_records, "json": _json_items, "csv": _csv_records}[fmt]
    blank_at = None
    for where, value in read(_Window(source, max_chars)):
        if value is BLANK:
            blank_at = blank_at or where
            continue
        if blank_at:
            raise InputError(
                f"`texts_file` {blank_at} is empty or whitespace-only (blank lines may only end the file)", "empty_text"
            )
        yield where, value


def _txt_records(window: _Window) -> Iterator[tuple[str, object]]:
    for n, offset, raw in _lines(window, universal=True):
        text = _decode(raw, f"line {n}", offset, window.source)
        yield f"line {n}", text if text.strip() else BLANK


def _jsonl_records(window: _Window) -> Iterator[tuple[str, object]]:
    for n, offset, raw in _lines(window, universal=False):
        line = _decode(raw, f"line {n}", offset, window.source)
        if not line.strip():
            yield f"line {n}", BLANK
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"`texts_file` line {n} is not valid JSON: {err.msg} (column {err.colno})", "bad_file") from None
        except ValueError:  # valid JSON Python will not read: an integer of more than sys.get_int_max_str_digits()
            raise InputError(f"`texts_file` line {n} holds a number of more than {sys.get_int_max_str_digits()} "
                             "digits, which cannot be read", "bad_file") from None
        except RecursionError:  # lists or objects nested thousands deep
            raise InputError(f"`texts_file` line {n} nests lists or objects too deeply to read", "bad_file") from None
        if not isinstance(record, dict) or "text" not in record:
            raise InputError(f"`texts_file` line {n} needs an object with a `text` field", "bad_file")
        yield f"line {n}", record["text"]


def _csv_records(window: _Window) -> Iterator[tuple[str, object]]:
    """The `text` field of each record after the header; a quoted field may span lines."""
    # The csv module refuses a field past a process-wide limit (131,072 characters) with a bare message. Our
    # record limit is larger and bounds memory already, so raise the module's to it (never lower: no other
    # reader in this process relies on it).
    csv.field_size_limit(max(csv.field_size_limit(), window.max_bytes))
    lines = _CsvLines(window)
    reader = csv.reader(lines, strict=True)  # strict: a quote never closed is an error, not the rest of the file
    column = width = None
    while True:
        lines.start_record()
        try:
            row = next(reader, None)
        except csv.Error as err:  # the csv module's messages describe the syntax, never quote the data
            why = "a quote opened in this record is never closed" if "unexpected end of data" in str(err) else err
            raise InputError(f"`texts_file` line {lines.first} is not valid CSV: {why}", "bad_file") from None
        if row is None:
            return
        where = f"line {lines.first}"
        if not row or (len(row) == 1 and not row[0].strip()):  # a blank line
            yield where, BLANK
        elif column is None:
            if "text" not in row:  # the header's cells are the user's: count them, never quote them
                near = [i + 1 for i, name in enumerate(row) if name.strip().lower() == "text"]
                hint = f"; field {near[0]} is `text` in other case or with spaces: name it exactly text" if near else ""
                raise InputError(f"`texts_file` (.csv) needs a column named exactly `text`; its header ({where}) has "
                                 f"{len(row)} fields, none named so{hint}", "bad_file")
            column, width = row.index("text"), len(row)
        elif len(row) <= column:
            raise InputError(
                f"`texts_file` {where} has {len(row)} fields; `text` is field {column + 1} of the header's {width}",
                "bad_file",
            )
        else:
            yield where, row[column]


class _CsvLines:
    """The decoded lines the csv module reads, with the first line and the size of the record being read."""

    def __init__(self, window: _Window):
        self._window = window
        self._lines = _lines(window, universal=True)
        self.line = 0  # the last line handed out
        self.first = 1  # the first line of the current record
        self._bytes = 0

    def start_record(self) -> None:
        self.first, self._bytes = self.line + 1, 0

    def __iter__(self) -> "_CsvLines":
        return self

    def __next__(self) -> str:
        n, offset, raw = next(self._lines)
        self.line = n
        self._bytes += len(raw) + 1
        if self._bytes > self._window.max_bytes:  # a quote never closed swallows the rest of the file
            raise self._window.too_long(f"record starting on line {self.first}", " (a quote never closed?)")
        return _decode(raw, f"line {n}", offset, self._window.source) + "\n"


# .json: a list of strings, scanned item by item. The scanner only finds where each string ends; json.loads
# decodes it (escapes, control characters). Structure bytes are ASCII, never part of a UTF-8 sequence.
_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_OPEN_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*')  # up to its closing quote, or the end of the buffer
_JSON_TYPES = {b"{": "an object", b"[": "a list", b"t": "a boolean", b"f": "a boolean", b"n": "null"}


def _json_items(window: _Window) -> Iterator[tuple[str, object]]:
    if _next_byte(window) != b"[":
        raise InputError("`texts_file` (.json) must hold a list of strings", "bad_file")
    window.pos += 1
    index = 0
    while True:
        byte = _next_byte(window)
        if byte == b"]" and index == 0:
            window.pos += 1
            break
        if byte != b'"':
            raise _json_error(window, f"item {index} must be a string, got {_json_type(byte)}")
        yield f"item {index}", _json_string(window, index)
        index += 1
        byte = _next_byte(window)
        window.pos += 1
        if byte == b"]":
            break
        if byte != b",":
            raise _json_error(window, f"is not valid JSON after item {index - 1}: expected ',' or ']'")
    if _next_byte(window):
        raise _json_error(window, "is not valid JSON: more data after the list")


def _next_byte(window: _Window) -> bytes:
    """The next byte that is not JSON whitespace, left unread; b"" at the end."""
    while True:
        window.pos = _WHITESPACE.match(window.buf, window.pos).end()
        if window.pos < len(window.buf) or not window.more():
            return window.buf[window.pos : window.pos + 1]


def _json_string(window: _Window, index: int) -> str:
    while True:
        end = _OPEN_STRING.match(window.buf, window.pos).end()
        if end - window.pos > window.max_bytes:
            raise window.too_long(f"item {index}")
        if window.buf[end : end + 1] == b'"':
            break
        if not window.more():
            raise _json_error(window, f"ends inside item {index}: its string is never closed")
    start = window.pos
    window.pos = end + 1
    token = _decode(window.buf[start : end + 1], f"item {index}", window.offset(start), window.source)
    try:
        return json.loads(token)
    except ValueError as err:
        raise InputError(f"`texts_file` item {index} is not a valid JSON string: {err.msg}", "bad_file") from None


def _json_type(byte: bytes) -> str:
    if not byte:
        return "the end of the file"
    return _JSON_TYPES.get(byte, "a number" if byte in b"-0123456789" else f"byte 0x{byte[0]:02X}")


def _json_error(window: _Window, what: str) -> InputError:
    return InputError(f"`texts_file` {what} ({window.source.where(window.offset(window.pos))})", "bad_file")
