"""No file a user uploads makes the worker's memory grow with the file: hostile files through predict() in a
fresh process (benchmarks/bulk_run.py --hostile), each refused with its message and its peak memory bounded.

The rise is the peak resident memory during the case (reset to the current figure just before, through
/proc/self/clear_refs; where that is refused, the peak since start: an upper bound) less the resident memory
before. The big single-line files are sparse (two megabytes of text, then a hole), so the test writes ~30 MB in all; a
reader that held the whole line would read the hole too. Figures for real 1 GB files: docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from testkit.cog_server import ROOT

# case -> (the error it must get, the most its peak may rise above the memory before it, in MB)
EXPECTED = {
    "500 MB .txt, one line": ("`texts_file` line 1 is over 1265536 bytes; the limit is 100000 characters per text", 50),
    "500 MB .jsonl, one line": ("`texts_file` line 1 is over 1265536 bytes", 50),
    "500 MB .csv, one field": ("`texts_file` line 2 is over 1265536 bytes", 50),
    "20 MB .csv, a quote never closed": ("`texts_file` record starting on line 2 is over 1265536 bytes (a quote", 16),
    ".json, 300,000 short strings": ("`texts_file` has more than 100000 texts; the limit is 100000 (E5_MAX_FILE_TEXTS)", 8),
    ".txt.gz bomb of 3 GB": ("`texts_file` decompresses to more than 600000000 bytes; the limit is 600000000", 32),
    "500 MB of zeros named .txt": ("`texts_file` line 1 holds a NUL byte (offset 0 of the file): binary data", 16),
}


@pytest.fixture(scope="module")
def hostile(checkpoint_dir):
    env = {**os.environ, "E5_MAX_FILE_TEXTS": "100000", "E5_MAX_FILE_BYTES": "600000000"}
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.bulk_run", "--hostile", "--megabytes", "500", "--sparse", "--json-lines",
         "--weights", str(checkpoint_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return {r["case"]: r for r in results}


def test_every_hostile_case_ran(hostile):
    assert sorted(hostile) == sorted(EXPECTED)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_a_hostile_file_is_refused_with_its_message_and_bounded_memory(hostile, case):
    fragment, bound_mb = EXPECTED[case]
    result = hostile[case]
    assert result["error"].startswith("InputError: ") and fragment in result["error"], result
    assert result["peak_rise_mb"] < bound_mb, result
