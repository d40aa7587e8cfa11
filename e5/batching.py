"""Planning micro-batches: pure list code, no model.

Sequences are sorted longest first and packed while `batch size x longest length` (the tokens the model
really computes, padding included) stays under a budget. Short texts then travel in large batches and long
ones in small, padding stays near zero, and the largest batch comes first, so an out-of-memory shows at once.
"""

from __future__ import annotations

from collections.abc import Sequence


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def plan_batches(
    lengths: Sequence[int],
    token_budget: int,
    multiple_of: int = 1,
    max_padding: float = 1.0,
    min_tokens: int = 0,
) -> list[list[int]]:
    """Indices into `lengths`, grouped so that each group's padded size is at most `token_budget`.

    `max_padding` is the largest fraction of a row that may be padding: a CPU computes every pad token at
    full cost and gains little from wide batches, so it wants this small; a GPU pays per forward launch and
    prefers wide batches. Below `min_tokens` padded tokens a batch keeps growing despite padding: every
    forward pays a fixed cost (reading all weights, launching every kernel) that a tiny batch cannot
    amortize. A single sequence longer than the budget still gets a batch of its own.
    """
    assert token_budget >= 1, f"token_budget must be >= 1, got {token_budget}"
    assert 0.0 <= max_padding <= 1.0, f"max_padding must be in [0, 1], got {max_padding}"
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0  # padded length of the batch: its first (longest) member
    for i in order:
        over_budget = (len(current) + 1) * width > token_budget
        too_padded = lengths[i] < (1.0 - max_padding) * width and len(current) * width >= min_tokens
        if current and (over_budget or too_padded):
            batches.append(current)
            current = []
        if not current:
            width = round_up(lengths[i], multiple_of)
        current.append(i)
    if current:
        batches.append(current)
    return batches


def padding_efficiency(lengths: Sequence[int], batches: Sequence[Sequence[int]], multiple_of: int = 1) -> float:
    """Real tokens / computed tokens for a plan (1.0 means no padding at all)."""
    real = sum(lengths)
    computed = sum(len(b) * round_up(max(lengths[i] for i in b), multiple_of) for b in batches)
    return real / computed if computed else 1.0
