"""Numbers from environment variables: one parser, so every setting refuses a bad value the same way."""

from __future__ import annotations

from collections.abc import Mapping


def env_number(environ: Mapping[str, str], name: str, kind: type = int, minimum: float = 1) -> int | float | None:
    """`environ[name]` as `kind` (int or float), or None when unset or empty.

    A value that does not parse, or is below `minimum`, raises ValueError naming the variable, so a typo in
    a deployment stops setup with a message instead of a bare traceback or a silent default.
    """
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be {'a whole number' if kind is int else 'a number'}, got {raw!r}") from None
    if not value >= minimum:  # also refuses nan
        raise ValueError(f"{name} must be at least {minimum}, got {raw!r}")
    return value
