"""The client snippets of docs/openai.md ("Clients"), as a user copies them: found by their `<!-- client: name -->`
marker, pointed at a test server, and run. Tests and benchmarks/retrieval_roles.py use the docs' own code, so
a snippet that stops working fails a test."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "openai.md"
MARKER = re.compile(r"<!-- client: ([\w-]+) -->\n```(\w+)\n(.*?)\n```", re.S)
DOC_HOST = "localhost:8000"


def snippets() -> dict[str, tuple[str, str]]:
    """name -> (language, code) of every marked snippet."""
    return {name: (language, code) for name, language, code in MARKER.findall(DOC.read_text(encoding="utf-8"))}


def snippet(name: str, url: str) -> str:
    """The snippet's code, talking to `url` (http://127.0.0.1:PORT) instead of the docs' localhost:8000."""
    code = snippets()[name][1]
    host = url.removeprefix("http://")
    return code.replace("http://" + DOC_HOST, url).replace(DOC_HOST, host)


def run_python(name: str, url: str, key: str = "unused") -> tuple[dict, str]:
    """Run a Python snippet as written (its key replaced where the server has one): (its namespace, what it printed)."""
    code = snippet(name, url).replace('"unused"', repr(key))
    namespace: dict = {"__name__": f"snippet_{name.replace('-', '_')}"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"docs/openai.md:{name}", "exec"), namespace)
    return namespace, printed.getvalue()
