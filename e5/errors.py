"""One small error hierarchy: what the caller did wrong apart from what broke inside.

Each error carries a stable `code` that tests and API users can match on; the message names the input in
backticks, the index, the limit and the value given (the style of text-embeddings-inference's errors).
"""

from __future__ import annotations


def item_label(name: str, index: int) -> str:
    """How a message names one item of a list input: `texts[3]`."""
    return f"`{name}[{index}]`"


class E5Error(Exception):
    code = "e5_error"

    def __init__(self, message: str, code: str | None = None, item: tuple[str, int] | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.item = item  # (input, index) where the message names one item as item_label does; a form renames it


class InputError(E5Error, ValueError):
    """The request is malformed: nothing was embedded, and the caller can fix it."""

    code = "invalid_input"


class WeightsError(E5Error, RuntimeError):
    """The checkpoint is missing, incomplete or not this model: setup cannot finish."""

    code = "bad_weights"


class EngineError(E5Error, RuntimeError):
    """The model failed on a valid request (for example out of memory on a single text)."""

    code = "engine_failure"


class BusyError(E5Error, RuntimeError):
    """A valid request found no room in the container's memory budget within its wait: send it again later."""

    code = "memory_busy"
