"""What one request makes the container hold at its peak, from its counts alone, before any work is done.

A request's memory is mostly its response, and Cog holds a response several times over: the worker turns our
arrays into Python objects and JSON, and the server (coglet, Rust) parses that JSON into a tree of values and
serialises it again. Measured through the real server per element of the response (`python -m
benchmarks.response_memory --synthetic`, docs/reliability.md), the server's share is ~170 bytes for every
number, whatever its JSON width, so a 1024-float vector costs ~270 KB in all and a 5,464-character base64
string ~46 KB: the element count, not the JSON size, is what to bound. On top come the engine's own arrays
(float32 vectors, the query x document scores and their sort) and the tokenizer's output.

`estimate` returns these parts in bytes; validation.py's `check_memory` refuses a request whose total is over
`Limits.max_request_mb` (E5_MAX_REQUEST_MB), naming the largest parts and the way out. The shape is the
published output's: `ranking` as `{index, score}` entries cut to `top_k`, the `scores` matrix only without
`top_k`, and no vectors with `include_vectors=false`. Costs are the measured figures rounded up, so the model
errs high.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1_000_000

# Bytes one element of the response costs Cog's server and worker together at their peak (measured: see the
# module docstring; rounded up by ~10%). A float vector has `dimensions` elements, an int8 vector as many,
# a binary one dimensions / 8, a base64 one a single string.
ELEMENT_BYTES = {
    "float": 370,  # 8-decimal float: server 172 + worker 93; 290-330 through predict() (test_memory_bound.py)
    "score": 310,  # a score in the `scores` matrix: 180 + 97 (measured at 6 decimals; a number's cost did not follow its width)
    "int8": 250,  # 166 + 61
    "binary": 240,  # 169 + 50
    "entry": 6500,  # a `{"index": i, "score": s}` entry, dict or Cog BaseModel: up to 4,410 + 1,263 measured
}
BASE64_VECTOR_BYTES = 50_000  # one 4096-byte vector as a 5,464-character string: 29,544 + 16,621
# The engine's arrays per vector: float32 out of the model plus the encoded copy (float64 for `float`).
ENGINE_VECTOR_BYTES = {"float": 12, "base64": 4, "int8": 5, "binary": 4}  # x dimensions
# Per query-document pair: float32 scores, the negated copy argsort sorts, its int64 order, the rounded copy.
ENGINE_PAIR_BYTES = 24
# The tokenizer's output per character read (its encodings, the Python id lists, the strings it copied):
# at most a token a character (CJK on XLM-R's vocabulary; characters counted after NFKC, validation.read_length),
# ~175 bytes a token measured on the test tokenizer (tests/test_memory_model.py).
TOKENIZER_CHAR_BYTES = 200
# With long_texts, texts are tokenized with character offsets (a tuple of two ints a token), and each window is a
# list of its own (its ids and the prefix it repeats). What a window costs beyond its vector was measured through
# the real server (tests/test_memory_bound.py, the long-texts case): at 20 KB a window, 46 texts of 6,000 CJK
# characters (~670 windows) were admitted at 392 MB estimated and rose 386 and 430 MB in two runs (the worker's
# heap varies by ~50 MB run to run); at 70 KB, 86 such texts (~1,250 windows) rose 548 MB under a limit of 800.
OFFSETS_CHAR_BYTES = 120
# TEI's /tokenize answers one object per token (its id, piece, span and marker flag): per character read, at
# most a token, each held as the tokenizer's output with offsets, a Tokens entry, TEI's dict, the JSON text and
# its bytes. Measured in-process (tokens + tei_tokens + json.dumps): 793 B a token at one token a character
# (4,000,000 spaced CJK characters, RSS +3,172 MB), 668 B a token at 0.17 a character (Latin words, 4,000,000
# characters, +460 MB); on the test tokenizer, with the answer's encoded bytes, 804 B a token
# (tests/test_memory_model.py). 1,000 leaves room for the run-to-run spread of a heap's peak.
TOKENIZE_CHAR_BYTES = 1_000
WINDOW_BYTES = 70_000


@dataclass(frozen=True)
class Shape:
    """The counts that size a request: known once it is validated, before it is tokenized."""

    queries: int  # `texts`
    documents: int = 0
    chars: int = 0  # what the tokenizer reads: texts, documents, the task on each query
    encoding: str = "float"
    top_k: int | None = None  # ranking cut to top_k per query; without it, the full `scores` matrix too
    vectors: bool = True  # the vectors are returned (a caller may leave them out)
    dimensions: int = 1024
    # long_texts mean or windows: at most this many sequences beyond one per text (e5/windows.py max_windows);
    # None with truncate. Set (even 0), every text is tokenized with its offsets.
    windows: int | None = None
    window_vectors: bool = False  # long_texts windows: each window's vector is returned


def vector_bytes(encoding: str, dimensions: int) -> int:
    """What one returned vector costs the server and the worker."""
    if encoding == "base64":
        return BASE64_VECTOR_BYTES * dimensions // 1024
    width = dimensions // 8 if encoding == "binary" else dimensions
    return width * ELEMENT_BYTES[encoding]


def estimate(shape: Shape) -> dict[str, int]:
    """The request's peak, in bytes, by part (parts that do not apply are 0)."""
    texts = shape.queries + shape.documents
    extra = shape.windows or 0
    returned = texts + (extra if shape.window_vectors else 0)
    ranked = min(shape.top_k or shape.documents, shape.documents)
    pairs = shape.queries * shape.documents
    return {
        "tokens": shape.chars * (TOKENIZER_CHAR_BYTES + (0 if shape.windows is None else OFFSETS_CHAR_BYTES)),
        "engine": (returned * shape.dimensions * ENGINE_VECTOR_BYTES[shape.encoding] + pairs * ENGINE_PAIR_BYTES
                   + extra * (WINDOW_BYTES + 4 * shape.dimensions)),
        "vectors": returned * vector_bytes(shape.encoding, shape.dimensions) if shape.vectors else 0,
        "scores": pairs * ELEMENT_BYTES["score"] if shape.documents and shape.top_k is None else 0,
        "ranking": shape.queries * ranked * ELEMENT_BYTES["entry"],
    }


def tokenize_bytes(chars: int) -> int:
    """A /tokenize request's peak: its answer, from the characters the tokenizer reads."""
    return chars * TOKENIZE_CHAR_BYTES


def peak_bytes(shape: Shape) -> int:
    return sum(estimate(shape).values())


def ways_out(shape: Shape, parts: dict[str, int]) -> str:
    """What the caller can change, for the largest parts first."""
    ways = []
    for part in sorted(parts, key=parts.get, reverse=True):
        if part in ("scores", "ranking") and parts[part] and shape.top_k is None:
            ways.append("set `top_k` (only the best documents per query come back, and no `scores` matrix)")
        elif part == "ranking" and parts[part]:
            ways.append("lower `top_k`")
        elif part == "vectors" and parts[part] and shape.encoding != "base64":
            ways.append("use `encoding_format` base64 (a vector as one string costs Cog ~6x less memory than as "
                        "1024 numbers; int8 saves little)")
    ways.append("send fewer texts or documents per request")
    ways.append("embed large sets as a `texts_file` or with Ray (scripts/ray_embed.py)")
    return "; ".join(dict.fromkeys(ways))


def describe(shape: Shape) -> str:
    what = f"{shape.queries} texts"
    if shape.documents:
        what += f" x {shape.documents} documents"
        what += f", top_k {shape.top_k}" if shape.top_k else ", no top_k (the full scores matrix)"
    return f"{what}, encoding_format {shape.encoding}"


# --- bulk jobs -------------------------------------------------------------------------------------------

# Cog 0.23 returns a bulk job's result inline as a base64 data URL (e5/bulk.py); at its peak the server held
# ~5.8 and the worker ~4.5 bytes per byte of it (docs/reliability.md, "What Cog holds for a large result").
DATA_URL_BYTES = 11
# x dimensions: `{"index": i, "embedding": [...]}` as bulk.py writes it, each value rounded to 8 decimals as the
# inline vectors are: at most "-12.12345678, " (14 characters) below 100 in size, which unnormalized vectors'
# values are; a unit vector's take 13 at most. The row's index and keys add ~30 bytes.
JSONL_ROW_BYTES = 14


def file_result_bytes(texts: int, output_format: str, dimensions: int = 1024) -> int:
    """A bulk job's peak: its result file, as the data URL Cog builds, held by the server and the worker."""
    file_bytes = texts * dimensions * (4 if output_format == "npy" else JSONL_ROW_BYTES)
    return file_bytes * 4 // 3 * DATA_URL_BYTES


def file_chunk_bytes(texts: int, chars: int, output_format: str, dimensions: int = 1024,
                     windows: int | None = None) -> int:
    """A bulk job's working set for one chunk: its tokens, its vectors (float32 and a copy) and, for .jsonl, the
    rows written from them; with long_texts (`windows` not None), the offsets and at most `windows` more
    sequences and vectors."""
    row = dimensions * (ENGINE_VECTOR_BYTES["float"] + (JSONL_ROW_BYTES if output_format == "jsonl" else 0))
    window_bytes = 0 if windows is None else chars * OFFSETS_CHAR_BYTES + windows * (WINDOW_BYTES + 4 * dimensions)
    return chars * TOKENIZER_CHAR_BYTES + texts * row + window_bytes
