"""The README and docs/ tell the truth about what can drift: presets, settings and their defaults, the test
command, the scripts and flags they name, the files they link, and the README's length budget."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from e5.batcher import max_wait_from_env
from e5.instructions import PRESETS
from e5.model import device_profile
from e5.validation import Limits

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {path: path.read_text(encoding="utf-8") for path in sorted((ROOT / "docs").glob("*.md"))}
DOCUMENTS = {ROOT / "README.md": README, ROOT / "CHANGELOG.md": (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), **DOCS}
# The README is for the people who call the model; measurements and their history live in docs/.
README_BUDGET_CHARS = 26_500  # two faces, the bulk model, the web form, the limits they share, a first screen
SETTING = re.compile(r"\bE5_[A-Z0-9_]+\b")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def settings_rows(markdown: str) -> dict[str, tuple[str, str]]:
    """The settings table: each `E5_...` variable named in the last column -> (what, default)."""
    section = markdown.split("## Limits and settings", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3:
            for name in SETTING.findall(cells[2]):
                rows[name] = (cells[0], cells[1])
    return rows


def settings_the_code_reads() -> set[str]:
    """Every string constant that is exactly an E5_ variable name in the engine and the Cog face, and every
    E5_ variable the scripts expand (`${E5_...}`)."""
    sources = [*sorted((ROOT / "e5").glob("*.py")), ROOT / "predict.py"]
    names = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SETTING.fullmatch(node.value):
                names.add(node.value)
    for script in sorted((ROOT / "scripts").glob("*.sh")):
        names |= set(re.findall(r"\$\{(E5_[A-Z0-9_]+)", script.read_text(encoding="utf-8")))
    return names


def changed_fields(before: object, after: object) -> list[str]:
    return [name for name in vars(before) if getattr(before, name) != getattr(after, name)]


def device_part(default: str, device: str) -> str:
    """'CPU: 2,040; CUDA: by free memory, at most 65,536' -> the text after `device:` up to the next ';'."""
    match = re.search(rf"{device}: ([^;]*)", default)
    assert match, f"no {device} default in {default!r}"
    return match.group(1)


def current(document: Path) -> str:
    """A document as it speaks of today's tree: the CHANGELOG's released entries keep the paths of their day."""
    text = DOCUMENTS[document]
    return text.split("\n## [", 2)[1] if document.name == "CHANGELOG.md" else text


def linked_paths(markdown: str) -> list[str]:
    """Relative link targets (files, maybe with #anchor); web links and same-page anchors left out."""
    return [t for t in LINK.findall(markdown) if not t.startswith(("http://", "https://", "#", "mailto:"))]


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors: lowercase, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"(?m)^#+ (.+)$", markdown)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


FOLDERS = ("scripts", "benchmarks", "testkit")  # what a reader runs: commands, the measuring lab, test support
SCRIPT_PATH = re.compile(rf"\b(?:{'|'.join(FOLDERS)})/[\w/.-]*\w")
MODULE_COMMAND = re.compile(rf"python -m ((?:{'|'.join(FOLDERS)})\.[a-z_][a-z0-9_]*)")  # not a NAME placeholder


def script_commands(markdown: str) -> list[tuple[str, list[str]]]:
    """(script path, its --flags) for every `[python] scripts/X.py ...` or `python -m benchmarks.X ...` in backticks,
    and on every line of a fenced code block."""
    commands = []
    fenced = [line for block in re.findall(r"(?ms)^\s*```[a-z]*\n(.*?)```", markdown) for line in block.splitlines()]
    for span in re.findall(r"`([^`\n]+)`", markdown) + fenced:
        span = MODULE_COMMAND.sub(lambda m: m.group(1).replace(".", "/") + ".py", span)
        for match in re.finditer(rf"((?:{'|'.join(FOLDERS)})/[\w/.-]+\.py)((?: +[^ ]+)*)", span):
            flags = [word.split("=")[0] for word in match.group(2).split() if word.startswith("--")]
            commands.append((match.group(1), flags))
    return commands


# --- the README's own tables ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_listed_with_its_exact_instruction(name):
    assert f"| `{name}` | {PRESETS[name].instruction} |" in README


def test_every_setting_the_code_reads_is_in_the_settings_table_and_nothing_else():
    read = settings_the_code_reads()
    assert read, "found no E5_ settings in the code: the scan is broken"
    table = set(settings_rows(README))
    assert read - table == set(), "settings the code reads but the README's table lacks"
    assert table - read == set(), "settings in the README's table that no code reads"
    assert set(SETTING.findall(README)) - read == set(), "E5_ names in the README that no code reads"


def limit_fields() -> dict[str, str]:
    """Each setting the code reads that moves a request limit -> the Limits field it sets."""
    fields = {name: changed_fields(Limits(), Limits.from_env({name: "7"})) for name in settings_the_code_reads()}
    return {name: changed[0] for name, changed in fields.items() if len(changed) == 1}


def profile_fields() -> dict[str, str]:
    """Each setting the code reads that moves the device profile -> the DeviceProfile field it sets."""
    base = device_profile("cpu", environ={})
    fields = {name: changed_fields(base, device_profile("cpu", environ={name: "7"})) for name in settings_the_code_reads()}
    return {name: changed[0] for name, changed in fields.items() if len(changed) == 1}


def test_every_request_limit_is_set_by_a_setting():
    assert set(limit_fields().values()) == set(vars(Limits())), "a Limits field that no E5_ setting sets"


@pytest.mark.parametrize("name, field", sorted(limit_fields().items()))
def test_each_limit_row_gives_the_default_of_its_own_variable(name, field):
    what, default = settings_rows(README)[name]
    assert default == f"{getattr(Limits(), field):,}", (name, what)


@pytest.mark.parametrize("name, field", sorted(profile_fields().items()))
def test_each_device_row_gives_the_cpu_and_cuda_defaults_of_its_own_variable(name, field):
    _, default = settings_rows(README)[name]
    for device, label in (("cpu", "CPU"), ("cuda", "CUDA")):
        value = getattr(device_profile(device, environ={}), field)
        text = device_part(default, label)
        assert (f"{value:,}" in text) if value else ("off" in text), (name, label, value, text)


def test_the_batch_wait_row_gives_its_default():
    _, default = settings_rows(README)["E5_BATCH_WAIT_MS"]
    assert default == f"{max_wait_from_env({}) * 1000:,.0f} ms"


def test_ci_runs_the_readme_test_command():
    assert "bash scripts/test.sh    #" in README
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("bash scripts/test.sh")


def test_the_readme_keeps_its_length_budget():
    assert len(README) <= README_BUDGET_CHARS, f"README.md has {len(README):,} characters; move detail to docs/"


# --- everything the README and docs/ point at ----------------------------------------------------------


@pytest.mark.parametrize("document", sorted(DOCUMENTS), ids=lambda p: p.name)
def test_every_linked_file_and_anchor_exists(document):
    for target in linked_paths(DOCUMENTS[document]):
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve()
        assert linked.exists(), f"{document.name} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in heading_anchors(linked.read_text(encoding="utf-8")), f"{document.name}: {target}"


@pytest.mark.parametrize("document", sorted(DOCUMENTS), ids=lambda p: p.name)
def test_every_script_named_exists(document):
    for path in set(SCRIPT_PATH.findall(current(document))):
        assert (ROOT / path).exists(), f"{document.name} names {path}, which does not exist"
    for module in set(MODULE_COMMAND.findall(current(document))):
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{document.name} runs {module}, which does not exist"


@pytest.mark.parametrize("document", sorted(DOCUMENTS), ids=lambda p: p.name)
def test_every_script_flag_named_is_one_the_script_takes(document):
    for script, flags in script_commands(current(document)):
        source = (ROOT / script).read_text(encoding="utf-8")
        for flag in flags:
            assert f'"{flag}"' in source, f"{document.name}: `{script}` has no {flag}"


def test_every_json_and_image_in_docs_is_linked():
    linked = {(path.parent / t.partition("#")[0]).resolve() for path, text in DOCUMENTS.items() for t in linked_paths(text)}
    data = [p for p in (ROOT / "docs").rglob("*") if p.suffix in (".json", ".png")]
    assert [p.name for p in data if p.resolve() not in linked] == [], "data files in docs/ that no document links"
