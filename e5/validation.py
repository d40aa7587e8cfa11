"""Checks on everything a request carries, before any tokenization or model work.

In the built image, Cog's server checks types, choices and bounds against the OpenAPI schema first (a 422);
what a schema cannot say (blank texts, limits, combinations of inputs) is checked here, and direct calls and
batch jobs have only this gate. Pure functions: each returns the clean value or raises `InputError` naming
the input, the index, the limit and the value given.
"""

from __future__ import annotations

import dataclasses
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, item_label
from .instructions import INPUT_TYPES, PRESETS, check_task, near_miss, resolve_task
from .memory_model import MB, Shape, describe, estimate, file_result_bytes, ways_out
from .profiles import LARGE_INSTRUCT, ModelProfile
from .settings import env_number
from .windows import LONG_TEXTS, MODEL_TOKENS, max_windows

ENCODING_FORMATS = ("float", "base64", "int8", "binary")
OUTPUT_FILE_FORMATS = ("npy", "jsonl")


@dataclass(frozen=True)
class Limits:
    """Bounds on the work one request can ask for (each set by the environment variable in its comment)."""

    max_texts: int = 10_000  # E5_MAX_TEXTS
    max_chars_per_text: int = 100_000  # E5_MAX_TEXT_CHARS: ~50x what 512 tokens can hold
    max_chars_per_request: int = 4_000_000  # E5_MAX_REQUEST_CHARS
    max_task_chars: int = 2_000  # E5_MAX_TASK_CHARS
    # E5_MAX_FILE_TEXTS: texts in one `texts_file`. Cog 0.23 returns the result file inline, as a data URL in
    # the JSON, and its server and worker hold ~10x that: 1.9 + 1.5 GB for 60,000 texts (docs/reliability.md).
    max_file_texts: int = 100_000
    # E5_MAX_FILE_BYTES: bytes of one `texts_file`, decompressed: 100,000 texts of ~2,000 bytes (300 words)
    max_file_bytes: int = 200_000_000
    # E5_MAX_BULK_TEXTS: texts in one job of the bulk model (predict_bulk.py), which returns shard files that
    # Cog uploads, so its memory stays flat whatever the count; its files may be larger (E5_MAX_BULK_FILE_BYTES).
    max_bulk_texts: int = 1_000_000
    # E5_MAX_BULK_FILE_BYTES: bytes of one bulk model's `texts_file`, decompressed: 1,000,000 texts of ~2,000 bytes
    max_bulk_file_bytes: int = 2_000_000_000
    # E5_MAX_REQUEST_MB: what one request may make the server and its worker hold at their peak, as
    # memory_model.py estimates it from the request's counts (docs/design.md, "Memory per request").
    max_request_mb: int = 5_000

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Limits":
        env = os.environ if environ is None else environ
        names = {
            "max_texts": "E5_MAX_TEXTS",
            "max_chars_per_text": "E5_MAX_TEXT_CHARS",
            "max_chars_per_request": "E5_MAX_REQUEST_CHARS",
            "max_task_chars": "E5_MAX_TASK_CHARS",
            "max_file_texts": "E5_MAX_FILE_TEXTS",
            "max_file_bytes": "E5_MAX_FILE_BYTES",
            "max_bulk_texts": "E5_MAX_BULK_TEXTS",
            "max_bulk_file_bytes": "E5_MAX_BULK_FILE_BYTES",
            "max_request_mb": "E5_MAX_REQUEST_MB",
        }
        values = {field: env_number(env, var) for field, var in names.items()}
        return cls(**{field: value for field, value in values.items() if value is not None})

    def check(self) -> "Limits":
        """Limits a container can serve with, or a ValueError naming the setting (raised in setup)."""
        default_task = PRESETS["web_search"].instruction
        if len(default_task) > self.max_task_chars:  # else every request that omits `task` would fail
            raise ValueError(f"E5_MAX_TASK_CHARS must be at least {len(default_task)} (the default task's length), "
                             f"got {self.max_task_chars}")
        return self


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def validate_texts(value: object, limits: Limits, name: str = "texts") -> list[str]:
    """A non-empty list of non-blank strings within the limits. A bare string is one text.

    JSON clients often send `"texts": "hello"`; treating it as a list of characters would embed
    five one-letter texts, so it becomes `["hello"]`.
    """
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise InputError(f"`{name}` must be a list of strings, got {_type_name(value)}", "invalid_type")
    if len(value) == 0:
        raise InputError(f"`{name}` is empty: send at least one text", "empty_list")
    if len(value) > limits.max_texts:
        raise InputError(
            f"`{name}` has {len(value)} texts; the limit is {limits.max_texts} per request "
            f"(split the request, use `texts_file`, or raise E5_MAX_TEXTS)",
            "too_many_texts",
        )
    for i, text in enumerate(value):
        validate_text(text, item_label(name, i), limits.max_chars_per_text, (name, i))
    return list(value)


def validate_text(text: object, label: str, max_chars: int, item: tuple[str, int] | None = None) -> None:
    """One text: a non-blank string of at most max_chars that UTF-8 can encode. `label` names it (as `item`)."""
    if not isinstance(text, str):
        raise InputError(f"{label} must be a string, got {_type_name(text)}", "invalid_type", item)
    if not text.strip():
        raise InputError(f"{label} is empty or whitespace-only", "empty_text", item)
    if len(text) > max_chars:
        raise InputError(
            f"{label} has {len(text)} characters; the limit is {max_chars} (only the first 512 tokens are embedded anyway)",
            "text_too_long", item,
        )
    _check_encodable(text, label, item)


def _check_encodable(text: str, label: str, item: tuple[str, int] | None = None) -> None:
    # A lone surrogate (possible from JSON `"\ud800"`) cannot be UTF-8 encoded and would fail deep in the
    # tokenizer with an unhelpful message.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            f"{label} is not valid Unicode: lone surrogate U+{ord(text[err.start]):04X} at position {err.start}",
            "invalid_unicode", item,
        ) from None


def validate_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"`{name}` must be one of {', '.join(choices)}; got {value!r}", "invalid_choice")
    return value


def validate_task(value: object, limits: Limits) -> str:
    """The instruction of a query: a preset name or a custom sentence."""
    if not isinstance(value, str):
        raise InputError(f"`task` must be a string, got {_type_name(value)}", "invalid_type")
    if not value.strip():
        raise InputError(
            "`task` is empty; queries need a one-sentence instruction or a preset name "
            f"({', '.join(sorted(PRESETS))})",
            "empty_task",
        )
    if len(value) > limits.max_task_chars:
        raise InputError(
            f"`task` has {len(value)} characters; the limit is {limits.max_task_chars}", "task_too_long"
        )
    _check_encodable(value, "`task`")
    meant = near_miss(value)
    if meant is not None:
        raise InputError(
            f"`task` {value.strip()!r} is not a preset name; did you mean `{meant}`? (Presets: "
            f"{', '.join(sorted(PRESETS))}. A custom instruction is a sentence, such as {PRESETS[meant].instruction!r}.)",
            "unknown_preset",
        )
    return value


def validate_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"`{name}` must be true or false, got {value!r}", "invalid_type")
    return value


def whole_number(value: object) -> object:
    """`2.0` as 2: JSON clients write whole numbers as floats, and JSON Schema's `integer` admits them. Anything
    else as it came, for the caller's own check."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def validate_whole_number(value: object, name: str, least: int, most: int | None) -> int:
    """A whole number in [least, most]; `2.0` counts as 2."""
    number = whole_number(value)
    if isinstance(number, bool) or not isinstance(number, int) or number < least or (most is not None and number > most):
        bound = f"at least {least}" + (f" and at most {most}" if most is not None else "")
        raise InputError(f"`{name}` must be a whole number of {bound}, got {value!r}", "invalid_number")
    return number


def validate_top_k(value: object, limits: Limits | None = None) -> int | None:
    """A whole number from 1 to the most documents a request can have (a larger one would mean the same).

    `2.0` counts as 2: JSON clients write whole numbers as floats, and JSON Schema's `integer` admits them."""
    if value is None:
        return None
    most = (limits or Limits()).max_texts
    number = whole_number(value)
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= most:
        # Echo what was sent (1.5, 1e+30), not a 31-digit integer made of it.
        raise InputError(f"`top_k` must be a whole number of at least 1 and at most {most} (E5_MAX_TEXTS), "
                         f"got {value!r}", "invalid_top_k")
    return number


NOT_MATRYOSHKA = (
    "this model was not trained to give shorter vectors (it is not Matryoshka-trained): "
    "a cut vector is not a smaller version of this one"
)


def validate_dimensions(dimensions: int | None, width: int) -> None:
    """OpenAI's and TEI's `dimensions`: only the model's own width, or none."""
    if dimensions is not None and dimensions != width:
        raise InputError(f"`dimensions` must be {width} or left out, got {dimensions}: {NOT_MATRYOSHKA}",
                         "invalid_dimensions")


def validate_input_type(value: object) -> str:
    return validate_choice(value, "input_type", INPUT_TYPES)


@dataclass(frozen=True)
class Options:
    """How every text of a request is embedded and written, with or without a file."""

    task: str = PRESETS["web_search"].instruction
    input_type: str = "query"
    normalize: bool = True
    truncate: bool = True
    encoding_format: str = "float"
    long_texts: str = "truncate"  # past the model's limit: cut (truncate), or windows: pooled (mean) or each


@dataclass(frozen=True)
class Request:
    """One request's inputs, named as the predictor declares them."""

    texts: object = None
    documents: object = None
    top_k: object = None
    texts_file: object = None
    output_file_format: object = "npy"
    options: Options = Options()
    include_vectors: bool = True  # False: only counts, scores and ranking come back (nothing encoded, less held)
    # Each document cut to its first N tokens, plus <s> and </s> (Cohere's `max_tokens_per_doc`); None: the
    # model's limit. Never more than the model's limit.
    document_tokens: object = None
    shape: Shape | None = None  # set by validate_request: the counts that size its memory (memory_model.py)


def validate_options(options: Options, limits: Limits) -> Options:
    """The options every request has. The task is checked only where it is used: on queries."""
    input_type = validate_input_type(options.input_type)
    task = validate_task(options.task, limits) if input_type == "query" else options.task
    return Options(
        task=task,
        input_type=input_type,
        normalize=validate_bool(options.normalize, "normalize"),
        truncate=validate_bool(options.truncate, "truncate"),
        encoding_format=validate_choice(options.encoding_format, "encoding_format", ENCODING_FORMATS),
        long_texts=validate_choice(options.long_texts, "long_texts", LONG_TEXTS),
    )


def validate_request(request: Request, limits: Limits, model: ModelProfile = LARGE_INSTRUCT) -> Request:
    """A request of `texts` (and maybe `documents` to rank) for `model`, clean, or the first thing wrong with it."""
    if request.texts_file is not None:
        raise ValueError("a `texts_file` request goes through validate_file_request")
    if request.texts is None:
        raise InputError("`texts` is required: give `texts` (a list of strings), `text` (one text per line) or "
                         "`texts_file`", "missing_texts")
    texts = validate_texts(request.texts, limits, "texts")
    options = validate_options(request.options, limits)
    check_task(options.task, options.input_type, model)
    documents = None
    if request.documents is not None:
        documents = validate_texts(request.documents, limits, "documents")
        if len(texts) + len(documents) > limits.max_texts:
            raise InputError(
                f"`texts` and `documents` have {len(texts) + len(documents)} texts together; "
                f"the limit is {limits.max_texts} per request",
                "too_many_texts",
            )
    check_request_chars(texts, documents, options, limits, model)
    chars = tokenized_chars(texts, options, model) + tokenized_chars(documents or [], DOCUMENT_OPTIONS, model)
    top_k = validate_top_k(request.top_k, limits)
    document_tokens = request.document_tokens
    if document_tokens is not None:
        document_tokens = validate_whole_number(document_tokens, "document_tokens", 1, None)
    if top_k is not None and documents is None:
        raise InputError("`top_k` applies to `documents`, which is empty", "top_k_without_documents")
    if options.long_texts == "windows" and documents is not None:
        raise InputError("`long_texts` windows gives each window's vector, which a ranking cannot use: rank with "
                         "`long_texts` mean (one vector per text), or embed the windows and score them yourself",
                         "conflicting_inputs")
    windows = None  # tokenized without offsets
    if options.long_texts != "truncate":
        windows = extra_windows(texts, options, model) + extra_windows(documents or [], DOCUMENT_OPTIONS, model)
    shape = Shape(len(texts), len(documents or ()), chars, options.encoding_format, top_k,
                  vectors=bool(request.include_vectors), windows=windows,
                  window_vectors=options.long_texts == "windows")
    check_memory(shape, limits)
    return dataclasses.replace(request, texts=texts, documents=documents, top_k=top_k, options=options, shape=shape,
                               document_tokens=document_tokens)


def validate_file_request(request: Request, limits: Limits, model: ModelProfile = LARGE_INSTRUCT) -> Request:
    """A bulk request: the file itself is read and checked record by record (files.py).

    Inputs that do not apply to a file are refused, not ignored: a caller who sent them expects their effect.
    """
    if request.texts is not None:
        raise InputError("give `texts` or `texts_file`, not both", "conflicting_inputs")
    if request.documents is not None:
        raise InputError(
            "`documents` are ranked against `texts`; a `texts_file` request cannot have them "
            "(embed the documents as a file of their own and compare the vectors)",
            "conflicting_inputs",
        )
    if request.top_k is not None:
        raise InputError("`top_k` ranks `documents`, which a `texts_file` request cannot have", "conflicting_inputs")
    options = validate_options(request.options, limits)
    check_task(options.task, options.input_type, model)
    if options.encoding_format != "float":
        raise InputError(
            f"`encoding_format` {options.encoding_format!r} shapes JSON output; `texts_file` results are float32 "
            "files: leave it at float",
            "conflicting_inputs",
        )
    if options.long_texts == "windows":
        raise InputError("`long_texts` windows gives a varying number of vectors per text, and a file's result has "
                         "one row per text: use `long_texts` mean, or send the texts in a request", "conflicting_inputs")
    output_file_format = validate_choice(request.output_file_format, "output_file_format", OUTPUT_FILE_FORMATS)
    return dataclasses.replace(request, texts_file=Path(request.texts_file), output_file_format=output_file_format,
                               options=options)


def check_memory(shape: Shape, limits: Limits) -> None:
    """Refuse a request whose estimated peak (memory_model.py) is over E5_MAX_REQUEST_MB, before any work."""
    parts = estimate(shape)
    total = sum(parts.values())
    if total > limits.max_request_mb * MB:
        largest = ", ".join(f"{part} ~{parts[part] // MB} MB" for part in sorted(parts, key=parts.get, reverse=True)
                            if parts[part] >= total // 10)
        raise InputError(
            f"the request would hold ~{total // MB} MB at its peak ({describe(shape)}: {largest}); the limit is "
            f"{limits.max_request_mb} MB per request (E5_MAX_REQUEST_MB). To fit: {ways_out(shape, parts)}",
            "request_too_large",
        )


def check_file_result(texts: int, output_format: str, limits: Limits, dimensions: int = 1024) -> None:
    """A bulk job's result comes back inside the response (Cog 0.23): refuse one that would not fit."""
    total = file_result_bytes(texts, output_format, dimensions)
    if total > limits.max_request_mb * MB:
        most = limits.max_request_mb * MB // file_result_bytes(1, output_format, dimensions)
        raise InputError(
            f"`texts_file` has {texts} texts; returning their vectors as .{output_format} would hold ~{total // MB} MB "
            f"(Cog returns the file inside the response); the limit is {limits.max_request_mb} MB per request "
            f"(E5_MAX_REQUEST_MB), about {most} texts as .{output_format}. To fit: split the file"
            + (", use `output_file_format` npy" if output_format != "npy" else "")
            + ", or embed it with Ray (scripts/ray_embed.py)",
            "request_too_large",
        )


def check_request_chars(texts: list[str], documents: list[str] | None, options: Options, limits: Limits,
                        model: ModelProfile = LARGE_INSTRUCT) -> int:
    """The characters one request sends the tokenizer, as written: texts, documents, and the task on every query
    (E5_MAX_REQUEST_CHARS). What they cost is counted by tokenized_chars."""
    task = len(resolve_task(options.task)) if options.input_type == "query" and model.uses_task else 0
    total = sum(map(len, texts)) + task * len(texts) + sum(len(d) for d in documents or ())
    if total > limits.max_chars_per_request:
        raise InputError(
            f"the request has {total} characters in all (`texts`, `documents` and the task on each query); "
            f"the limit is {limits.max_chars_per_request} per request (E5_MAX_REQUEST_CHARS)",
            "request_too_large",
        )
    return total


DOCUMENT_OPTIONS = Options(input_type="document")


def extra_windows(texts: list[str], options: Options, model: ModelProfile = LARGE_INSTRUCT) -> int:
    """At most how many windows beyond one per text `texts` make with `long_texts`, before tokenizing."""
    if options.input_type == "query":
        prefix = len(model.format_query(resolve_task(options.task), ""))
    else:
        prefix = len(model.format_document(""))
    return sum(max_windows(read_length(text), prefix, MODEL_TOKENS) - 1 for text in texts)


def read_length(text: str) -> int:
    """The characters the tokenizer reads in `text`: its length, or its length under NFKC where that is longer.
    XLM-R's tokenizer normalizes first, and a few characters expand: U+FDFA to 18 characters and 4 tokens, ㎯
    (U+33AF) to 6 and 4 tokens. Counted after normalizing, a token still holds at least one character, which is
    what the memory model and the window bound assume."""
    if text.isascii() or unicodedata.is_normalized("NFKC", text):
        return len(text)
    return max(len(text), len(unicodedata.normalize("NFKC", text)))


def tokenized_chars(texts: list[str], options: Options, model: ModelProfile = LARGE_INSTRUCT) -> int:
    """What the tokenizer reads for `texts` (read_length): the texts, and on queries the task in front of each (for
    a model that takes one; a short fixed prefix such as `query: ` is left out of the count, as the instruct
    one's is). The memory model's count of characters."""
    task = read_length(resolve_task(options.task)) if options.input_type == "query" and model.uses_task else 0
    return sum(map(read_length, texts)) + task * len(texts)
