"""How vectors leave the service: JSON floats, or compact forms that cut response size.

- float:  lists of floats (default).
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


def encode_vectors(vectors: np.ndarray, encoding_format: str) -> list:
    """(N, C) float32 -> a JSON-ready list with one entry per vector."""
    if encoding_format == "float":
        return vectors.tolist()  # numpy's C loop; a Python loop here costs more than a GPU forward
    if encoding_format == "base64":
        data = np.ascontiguousarray(vectors, dtype="<f4")
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in data]
    if encoding_format == "int8":
        return to_int8(vectors).tolist()
    if encoding_format == "binary":
        return to_binary(vectors).tolist()
    raise ValueError(f"unknown encoding_format {encoding_format!r}")


def decode_base64(encoded: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(encoded), dtype="<f4")
