"""How vectors leave the service: JSON floats, or compact forms that cut response size and server time.

- float:  lists of floats (default), rounded to 8 decimals (error <= 5e-9, below float32's own batch-to-batch
          noise; 44% less JSON than float32's 17-digit float64 reprs). base64 carries the exact float32 bits.
- base64: each vector's little-endian float32 bytes in base64, as OpenAI's embeddings API encodes them.
- int8:   round(127 * x), clipped to [-127, 127]: a fixed scale, exact for unit vectors (components in [-1, 1]).
- binary: the sign bit of each component (set where x > 0), packed 8 to a byte with numpy's `packbits`
          (most significant bit first): 1024 dimensions -> 128 values in 0..255, for Hamming search.
"""

from __future__ import annotations

import base64

import numpy as np

INT8_SCALE = 127.0


def to_int8(vectors: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(vectors * INT8_SCALE), -127, 127).astype(np.int8)


def to_binary(vectors: np.ndarray) -> np.ndarray:
    return np.packbits(vectors > 0, axis=-1)


FLOAT_DECIMALS = 8


def encode_vectors(vectors: np.ndarray, encoding_format: str) -> np.ndarray | list[str]:
    """(N, C) float32 -> one entry per vector: an array (see `output_array`), or base64 strings."""
    if encoding_format == "float":
        return np.round(vectors.astype(np.float64), FLOAT_DECIMALS)
    if encoding_format == "base64":
        data = np.ascontiguousarray(vectors, dtype="<f4")
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in data]
    if encoding_format == "int8":
        return to_int8(vectors)
    if encoding_format == "binary":
        return to_binary(vectors)
    raise ValueError(f"unknown encoding_format {encoding_format!r}")


class TupleArray(np.ndarray):
    """An array whose `tolist()` gives nested tuples: the same JSON, without Cog's walk over every number.

    Cog's output encoder (coglet, Cog 0.23) turns an array into lists with `tolist()`, then visits every
    element of every list looking for files to upload: a few module lookups and isinstance checks per
    number, 11-14 s for 2,048 x 1,024 floats on a 2-core machine (docs/performance.md). It hands tuples on whole, and
    `json.dumps` writes a tuple as the same JSON array as a list, so the response is byte-for-byte the same.
    (Nested Python lists cost more still: `dataclasses.asdict` copies them element by element.)
    """

    def tolist(self):
        return _tuples(np.ndarray.tolist(self))


def _tuples(value):
    if not isinstance(value, list):
        return value  # a 0-d array's scalar
    if value and isinstance(value[0], list):
        return tuple(_tuples(v) for v in value)
    return tuple(value)


def output_array(value: np.ndarray | list) -> np.ndarray | list:
    """Arrays leave as `TupleArray` (a view, no copy); anything else as it is."""
    return value.view(TupleArray) if isinstance(value, np.ndarray) else value


def vector_fields(vectors: np.ndarray, encoding_format: str) -> tuple[np.ndarray | list, list[str] | None]:
    """The two output fields a set of vectors fills: (numbers, base64 strings).

    One field per JSON type, so the output schema can say what each holds: float, int8 and binary vectors
    are arrays of numbers (`embeddings`), base64 vectors are strings (`embeddings_base64`); the field the
    format does not use is [] for the numbers and None for the strings.
    """
    encoded = encode_vectors(vectors, encoding_format)
    if encoding_format == "base64":
        return [], encoded
    return output_array(encoded), None


def as_list(value: np.ndarray | list) -> list:
    """The vectors a response holds (an array, or [] with base64) as plain JSON lists, for the HTTP faces."""
    return value.tolist() if hasattr(value, "tolist") else list(value)


def decode_base64(encoded: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(encoded), dtype="<f4")
