"""The JSON record a benchmark writes with `--out`: the command that made it, the machine, the seconds it took,
then its figures (docs/runs/ keeps them, and the docs cite each by its command)."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path


def write_record(path: Path | None, module: str, argv: list[str] | None, started: float, **figures) -> dict:
    record = {"command": f"python -m benchmarks.{module} " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.machine()}, Python {platform.python_version()}",
              "seconds": round(time.perf_counter() - started, 1), **figures}
    if path:
        path.write_text(json.dumps(record, indent=2) + "\n")
    return record
