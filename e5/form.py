"""What a form sends, made into a request: the text boxes, the empty values a ticked box sends, and errors
that name the line a person sees.

Replicate's web form and Cog's own schema-driven UI (its playground) draw a form from the OpenAPI schema:
- A `str` input is a plain text box; a `list[str]` is a JSON editor. `text` and `document` are the boxes:
  one text per line, so a person embeds and ranks sentences without writing JSON.
- An optional input starts unticked and sends nothing, so its default applies. Ticking it fills the box with
  that default, and Run sends what the box shows. So every optional input's default is a value the engine
  reads as "not given" (`[]`, `""`, `0`), never null: Cog's server answers a null with a raw 422 before
  Python sees it (docs/web-form.md).
The meaning of each default is here, in one place; the engine's own `Request` keeps None for "not given".
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field

from .errors import InputError, item_label


# The line breaks of a .txt `texts_file` (files.py): `\r\n`, `\r`, `\n`. Not str.splitlines(), which also
# splits at form feeds, U+2028 and other Unicode breaks, so the box and a file would number rows differently.
LINE_BREAK = re.compile(r"\r\n|\r|\n")

# Each box and the list input it stands for: its texts reach the engine under the list's name.
BOXES = {"texts": "text", "documents": "document"}


def lines_from_box(text: str | None) -> list[tuple[int, str]]:
    """(line number, text) of each non-blank line, counted from 1 as a person reads the box. [] for nothing."""
    if text is None or not text.strip():
        return []
    return [(number, line) for number, line in enumerate(LINE_BREAK.split(text), 1) if line.strip()]


def texts_from_box(text: str | None) -> list[str] | None:
    """One text per line; blank lines are skipped (a trailing line break is no empty text). None: nothing typed.

    A line break always ends a text here: a text that contains one is sent as an item of `texts`.
    """
    return [line for _, line in lines_from_box(text)] or None


def given(value: object) -> object:
    """None for what an untouched box of a list input sends (its default `[]`, or `""`); else the value."""
    return None if isinstance(value, (list, tuple, str)) and len(value) == 0 else value


def given_number(value: object) -> object:
    """None for `0`, the default of `top_k`; else the value (False too: the engine refuses a boolean)."""
    return None if type(value) in (int, float) and value == 0 else value


@dataclass
class Form:
    """The list inputs as the engine takes them, and the box line of each item that came from a box."""

    texts: object = None
    documents: object = None
    top_k: object = None
    lines: dict[str, list[int]] = field(default_factory=dict)  # "texts" / "documents" -> line of each item

    @contextmanager
    def naming_lines(self):
        """Errors about an item that came from a box name its line, not its index among the non-blank lines."""
        try:
            yield
        except InputError as err:
            if err.item is None or err.item[0] not in self.lines:
                raise
            name, index = err.item
            where = f"`{BOXES[name]}` line {self.lines[name][index]}"
            raise InputError(str(err).replace(item_label(name, index), where), err.code) from None


def read_form(text: object, texts: object, document: object, documents: object, top_k: object,
              texts_file: object = None) -> Form:
    """The texts, documents and top_k to embed and rank, from the boxes or the lists; or the mistake and its
    way out. Nothing to embed, and `texts` with `texts_file`, are left to the engine's checks (validation.py),
    which every face shares."""
    form = Form(texts=given(texts), documents=given(documents), top_k=given_number(top_k))
    for name, box, value in (("texts", text, form.texts), ("documents", document, form.documents)):
        typed = lines_from_box(box if isinstance(box, str) else None)
        if not typed:
            continue
        others = [(name, value)] + ([("texts_file", texts_file)] if name == "texts" else [])
        for other, given_value in others:
            if given_value is not None:
                raise InputError(f"give `{BOXES[name]}` or `{other}`, not both (`{BOXES[name]}` is one text per "
                                 f"line; `{other}` replaces it)", "conflicting_inputs")
        setattr(form, name, [line for _, line in typed])
        form.lines[name] = [number for number, _ in typed]
    return form
