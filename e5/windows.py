"""Texts past the model's 512 tokens, embedded whole: overlapping windows, and their weighted mean.

The model reads at most 512 tokens. With `long_texts` other than `truncate`, a longer text is cut into windows
of its tokens instead, each read like a text of its own:

    <s> [the recipe's prefix: a query's `Instruct: {task}\\nQuery: `] [the next piece of the text] </s>

A query keeps its instruction in every window (its tokens count against the window); a document is windowed
raw. Consecutive windows share `overlap` tokens of the text, so a sentence cut at one window's edge is whole
in the next. A text that fits is one window: exactly today's tokens, hence exactly today's vector.

`mean` gives one vector per text: the windows' vectors averaged with weights (each window's tokens of the
text, or equal; WEIGHTING) and renormalised when vectors are normalised. `windows` gives each window's
vector with the character span of the text it covers. The defaults (WINDOW_OVERLAP, WEIGHTING) were chosen from
`python -m benchmarks.long_texts` (docs/long-texts.md). Pure list and numpy code, tested without a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

LONG_TEXTS = ("truncate", "mean", "windows")
# Read when called, not bound as defaults, so that benchmarks/long_texts.py can compare other values.
WINDOW_OVERLAP = 128  # tokens of the text two consecutive windows share (docs/long-texts.md)
WEIGHTING = "tokens"  # each window weighs as many of the text's tokens as it holds ("equal": 1 each)
MIN_STRIDE = 128  # a window must bring this many new tokens of the text; a longer instruction leaves too few
MODEL_TOKENS = 512  # both E5 models' limit (model.token_limit reads it from the checkpoint): bounds before loading


@dataclass(frozen=True)
class Window:
    """One window of a text: which text, the characters of the text it covers, and how many of its tokens."""

    text: int
    start: int
    end: int
    tokens: int  # the text's tokens in this window (the instruction and the markers left out)


def split(ids: list[int], spans: list[tuple[int, int]], prefix_chars: int, limit: int, text: int = 0,
          overlap: int | None = None) -> tuple[list[list[int]], list[Window]]:
    """A long text's full encoding (`ids` with <s> and </s>, `spans` each token's characters in the formatted
    text, whose first `prefix_chars` are the recipe's prefix) -> its windows' ids and what each covers.

    The prefix is the tokens that lie wholly inside it; the rest are the text's, cut into pieces of what room
    the prefix and the two markers leave, each starting `overlap` tokens before the last one ended.
    """
    bos, body, eos = ids[0], ids[1:-1], ids[-1]
    body_spans = spans[1:-1]
    n_prefix = 0
    while n_prefix < len(body) and body_spans[n_prefix][1] <= prefix_chars:
        n_prefix += 1
    prefix, tokens, token_spans = body[:n_prefix], body[n_prefix:], body_spans[n_prefix:]
    overlap = WINDOW_OVERLAP if overlap is None else overlap
    room = limit - 2 - len(prefix)
    step = room - overlap
    if step < MIN_STRIDE:
        raise InputError(
            f"the task's instruction takes {len(prefix)} of a window's {limit} tokens, leaving {room}: too few to "
            f"window a long text with {overlap} tokens of overlap (at least {MIN_STRIDE + overlap} are needed); "
            "use a shorter `task`", "task_too_long_for_windows")
    pieces, windows, first = [], [], 0
    while True:
        last = min(first + room, len(tokens))
        pieces.append([bos, *prefix, *tokens[first:last], eos])
        windows.append(Window(text, max(token_spans[first][0] - prefix_chars, 0), token_spans[last - 1][1] - prefix_chars,
                              last - first))
        if last == len(tokens):
            return pieces, windows
        first += step


def max_windows(chars: int, prefix_chars: int, limit: int, overlap: int | None = None) -> int:
    """At most how many windows a text of `chars` characters makes, before it is tokenized: a token holds at
    least one character (CJK on XLM-R's vocabulary), and the prefix at most as many tokens as characters."""
    overlap = WINDOW_OVERLAP if overlap is None else overlap
    step = max(limit - 2 - prefix_chars - overlap, MIN_STRIDE)
    room = step + overlap
    return 1 if chars <= room else 1 + -(-(chars - room) // step)


def weights(windows: list[Window], weighting: str | None = None) -> np.ndarray:
    weighting = WEIGHTING if weighting is None else weighting
    return np.array([w.tokens if weighting == "tokens" else 1 for w in windows], dtype=np.float64)


def pool(vectors: np.ndarray, windows: list[Window], texts: int, normalize: bool,
         weighting: str | None = None) -> np.ndarray:
    """One vector per text: the weighted mean of its windows' vectors (rows of `vectors`, in `windows` order),
    L2-normalised again when the windows' vectors were (a mean of unit vectors is shorter than 1). A text of
    one window keeps that window's vector exactly."""
    owners = np.array([w.text for w in windows])
    weight = weights(windows, weighting)
    out = np.empty((texts, vectors.shape[1]), dtype=np.float32)
    for text in range(texts):
        rows = np.flatnonzero(owners == text)
        if len(rows) == 1:
            out[text] = vectors[rows[0]]
            continue
        mean = (vectors[rows].astype(np.float64) * weight[rows, None]).sum(0) / weight[rows].sum()
        out[text] = mean / np.linalg.norm(mean) if normalize else mean
    return out
