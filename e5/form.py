"""What a form sends, made into a request: the text box, and the way out of each mistake.

Replicate's web form (and Cog's own schema-driven UI) renders `list[str]` inputs as JSON editors and a `str`
input as a plain text box. `text` is that box: one text per line, so a person embeds a sentence or several
without writing JSON. Forms also send what a person ticked but left empty (`documents: []`); that is answered
here with the way out, before the engine's own checks (which also take `2.0` as a whole number for `top_k`).
"""

from __future__ import annotations

import re

from .errors import InputError


# The line breaks of a .txt `texts_file` (files.py): `\r\n`, `\r`, `\n`. Not str.splitlines(), which also
# splits at form feeds, U+2028 and other Unicode breaks, so the box and a file would number rows differently.
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def texts_from_box(text: str | None) -> list[str] | None:
    """One text per line; blank lines are skipped (a trailing line break is no empty text). None: nothing typed.

    A line break always ends a text here: a text that contains one is sent as an item of `texts`.
    """
    if text is None or not text.strip():
        return None
    return [line for line in LINE_BREAK.split(text) if line.strip()]


def form_texts(texts: object, text: str | None, texts_file: object, documents: object) -> object:
    """The texts to embed, from `texts` or the `text` box, or the mistake with its way out.

    Nothing to embed, and `texts` with `texts_file`, are left to the engine's checks (validation.py), which
    every face shares.
    """
    typed = texts_from_box(text)
    if typed is not None:
        for name, value in (("texts", texts), ("texts_file", texts_file)):
            if value is not None:
                raise InputError(f"give `text` or `{name}`, not both (`text` is one text per line; `{name}` "
                                 "replaces it)", "conflicting_inputs")
        texts = typed
    if isinstance(documents, (list, tuple)) and len(documents) == 0:
        raise InputError("`documents` is empty: untick `documents` or add one (leave it out to embed without ranking)",
                         "empty_list")
    return texts
