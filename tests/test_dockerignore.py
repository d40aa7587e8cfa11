"""`.dockerignore` keeps out of the image everything git ignores, except the weights the image needs.

`cog build` copies the project folder into the image (`COPY . /src`) minus what .dockerignore names; a file git
ignores is a local build output or cache (a wheel folder, GPU run outputs, an environment), never part of the
model. Both files are read with their own rules: git's through `git check-ignore`, Docker's as its pattern
matcher reads them (a pattern is anchored at the context root; `**` spans any number of folders).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NEEDED = ("weights/",)  # git ignores the weights; the image must carry them

# One path under each kind of thing a checkout gathers, at the root and deeper down.
SAMPLES = [
    ".venv/bin/python", ".venv-serve/bin/python", "e5/__pycache__/model.cpython-312.pyc", "scripts/x.pyc",
    ".pytest_cache/v/cache", ".hypothesis/examples/x", "tests/.hypothesis/x", ".cog/tmp/build123/x",
    ".schemathesis/cassette.yaml", ".env", "scripts/.env",
    "bench-out/run.json", ".whl/coglet-0.23.1.whl", "gpu-out/report.json", "benchmarks/.venv/bin/python",
    "weights/model.safetensors", "weights/config.json", "weights/README.md",
    "predict.py", "e5/model.py", "cog.yaml", "requirements.txt", "scripts/serve.sh", ".cog/openapi_schema.json",
    "openai_api.py", "peer_api.py", "api_metrics.py",
]


def docker_patterns() -> list[tuple[bool, re.Pattern]]:
    """(exclude?, regex) per line, as Docker's patternmatcher reads .dockerignore."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        rules.append((exclude, re.compile(regex + "(/.*)?$")))  # a folder's pattern covers what it holds
    return rules


def docker_excludes(path: str) -> bool:
    excluded = False
    for exclude, regex in docker_patterns():  # the last matching line decides
        if regex.match(path):
            excluded = exclude
    return excluded


def git_ignores(paths: list[str]) -> set[str]:
    run = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode in (0, 1), run.stderr
    return set(run.stdout.split())


def test_the_matcher_reads_patterns_as_docker_does():
    assert docker_excludes("e5/__pycache__/x.pyc") and docker_excludes("__pycache__/x.pyc")  # **/ spans zero folders
    assert docker_excludes("bench-out/run.json") and not docker_excludes("benchmarks/bench-out-notes.md")
    assert not docker_excludes("predict.py") and not docker_excludes("weights/model.safetensors")


@pytest.mark.parametrize("path", SAMPLES)
def test_what_git_ignores_stays_out_of_the_image_except_the_weights(path):
    ignored = path in git_ignores(SAMPLES)
    if path.startswith(NEEDED):
        assert not docker_excludes(path), f"{path}: the image needs it"
    elif path == ".cog/openapi_schema.json":
        # Cog leaves .cog/ out of the build context itself and writes a fresh schema inside the image.
        assert docker_excludes(path)
    else:
        assert docker_excludes(path) == ignored, f"{path}: git {'ignores' if ignored else 'keeps'} it"


def test_every_gitignore_line_is_exercised_by_a_sample():
    lines = [l.strip() for l in (ROOT / ".gitignore").read_text().splitlines() if l.strip() and not l.startswith(("#", "!"))]
    run = subprocess.run(["git", "check-ignore", "--no-index", "-v", *SAMPLES], cwd=ROOT, capture_output=True, text=True)
    matched = {row.split("\t")[0].split(":", 2)[2] for row in run.stdout.splitlines()}  # "source:line:pattern\tpath"
    assert [line for line in lines if line not in matched] == [], "add a sample path for these .gitignore lines"
