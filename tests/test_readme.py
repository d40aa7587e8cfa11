"""The README tells the truth about the things that can drift: presets, limits, the test command."""

from __future__ import annotations

from pathlib import Path

import pytest

from e5.instructions import PRESETS
from e5.validation import Limits

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_listed_with_its_exact_instruction(name):
    assert f"| `{name}` | {PRESETS[name].instruction} |" in README


def test_default_limits_are_the_documented_ones():
    limits = Limits()
    for value in (limits.max_texts, limits.max_chars_per_text, limits.max_chars_per_request, limits.max_file_texts):
        assert f"| {value:,} |" in README


def test_ci_runs_the_readme_test_command():
    assert "bash scripts/test.sh    #" in README
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("bash scripts/test.sh")
