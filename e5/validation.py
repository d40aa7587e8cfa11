"""Checks on everything a request carries, before any tokenization or model work.

The Cog server validates nothing unless `cog build` wrote a schema, and direct calls never do, so these
functions are the only gate. They are pure: each returns the clean value or raises `InputError` naming the
input, the index, the limit and the value given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import InputError
from .instructions import INPUT_TYPES, PRESETS
from .settings import env_number

ENCODING_FORMATS = ("float", "base64", "int8", "binary")


@dataclass(frozen=True)
class Limits:
    """Bounds on the work one request can ask for (each set by the environment variable in its comment)."""

    max_texts: int = 10_000  # E5_MAX_TEXTS
    max_chars_per_text: int = 100_000  # E5_MAX_TEXT_CHARS: ~50x what 512 tokens can hold
    max_chars_per_request: int = 4_000_000  # E5_MAX_REQUEST_CHARS
    max_task_chars: int = 2_000  # E5_MAX_TASK_CHARS
    max_file_texts: int = 1_000_000  # E5_MAX_FILE_TEXTS: texts in one `texts_file`

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Limits":
        env = os.environ if environ is None else environ
        names = {
            "max_texts": "E5_MAX_TEXTS",
            "max_chars_per_text": "E5_MAX_TEXT_CHARS",
            "max_chars_per_request": "E5_MAX_REQUEST_CHARS",
            "max_task_chars": "E5_MAX_TASK_CHARS",
            "max_file_texts": "E5_MAX_FILE_TEXTS",
        }
        values = {field: env_number(env, var) for field, var in names.items()}
        return cls(**{field: value for field, value in values.items() if value is not None})


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
    total = 0
    for i, text in enumerate(value):
        validate_text(text, f"`{name}[{i}]`", limits.max_chars_per_text)
        total += len(text)
    if total > limits.max_chars_per_request:
        raise InputError(
            f"`{name}` has {total} characters in all; the limit is {limits.max_chars_per_request} per request",
            "request_too_large",
        )
    return list(value)


def validate_text(text: object, label: str, max_chars: int) -> None:
    """One text: a non-blank string of at most max_chars that UTF-8 can encode. `label` names it."""
    if not isinstance(text, str):
        raise InputError(f"{label} must be a string, got {_type_name(text)}", "invalid_type")
    if not text.strip():
        raise InputError(f"{label} is empty or whitespace-only", "empty_text")
    if len(text) > max_chars:
        raise InputError(
            f"{label} has {len(text)} characters; the limit is {max_chars} (only the first 512 tokens are embedded anyway)",
            "text_too_long",
        )
    _check_encodable(text, label)


def _check_encodable(text: str, label: str) -> None:
    # A lone surrogate (possible from JSON `"\ud800"`) cannot be UTF-8 encoded and would fail deep in the
    # tokenizer with an unhelpful message.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            f"{label} is not valid Unicode: lone surrogate U+{ord(text[err.start]):04X} at position {err.start}",
            "invalid_unicode",
        ) from None


def validate_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"`{name}` must be one of {', '.join(choices)}; got {value!r}", "invalid_choice")
    return value


def validate_task(value: object, input_type: str, limits: Limits) -> str:
    if not isinstance(value, str):
        raise InputError(f"`task` must be a string, got {_type_name(value)}", "invalid_type")
    if input_type == "query" and not value.strip():
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
    return value


def validate_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"`{name}` must be true or false, got {value!r}", "invalid_type")
    return value


def validate_top_k(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"`top_k` must be a whole number of at least 1, got {value!r}", "invalid_top_k")
    return value


def validate_input_type(value: object) -> str:
    return validate_choice(value, "input_type", INPUT_TYPES)
