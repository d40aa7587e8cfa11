"""Disable each guard in turn and see whether the tests notice: which mutations the suite kills.

    python -m benchmarks.mutations [--only NAME] [--json docs/runs/mutations.json]

Each mutation replaces one line of the engine in a fresh copy of the repository (the files git tracks), then
runs the test files that cover that code. Killed: at least one test failed. Survived: every test passed, so
nothing guards that line. Hung: the tests neither passed nor failed within HUNG_S. A mutation whose line is no
longer in the file is reported as stale (the list below must follow the code).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HUNG_S = 1800  # a mutant's tests still running after this long hang (pytest.ini's per-test timeout is 900 s)


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    line: str  # the exact text to replace (one occurrence)
    replacement: str
    tests: tuple[str, ...]


BATCHER_TESTS = ("tests/test_batcher.py", "tests/test_predictor.py")
BUDGET_TESTS = ("tests/test_budget.py",)
VALIDATION_TESTS = ("tests/test_pure.py", "tests/test_predictor.py", "tests/test_properties.py", "tests/test_limits.py")

MUTATIONS = [
    Mutation("a round holds about one forward (the room check)", "e5/batcher.py",
             "if pieces and tokens > room:", "if False:", BATCHER_TESTS),
    Mutation("a new job takes one piece per round", "e5/batcher.py",
             "if take_new:  # a new job's first piece", "if False:  # a new job's first piece", BATCHER_TESTS),
    Mutation("rounds alternate between new jobs and jobs under way", "e5/batcher.py",
             "take_new = bool(new) and (not under_way or not self._last_round_new)", "take_new = bool(new)",
             BATCHER_TESTS),
    Mutation("jobs under way go least served first", "e5/batcher.py",
             "order = sorted(under_way, key=lambda j: (j.served, j.arrival))",
             "order = sorted(under_way, key=lambda j: j.arrival)", BATCHER_TESTS),
    Mutation("a cancelled job's texts are skipped at the forward", "e5/batcher.py",
             "live = [items[i] for i in batch if not items[i][0].future.done()]", "live = [items[i] for i in batch]",
             BATCHER_TESTS),
    Mutation("a cancelled job takes no more rounds", "e5/batcher.py",
             "return not self.future.done() and (self.pieces is None or bool(self.pieces))",
             "return self.pieces is None or bool(self.pieces)", BATCHER_TESTS),
    Mutation("a failed micro-batch is retried request by request", "e5/batcher.py",
             "await self._retry_apart(live, err)", "[job.fail(err) for job, _ in live]", BATCHER_TESTS),
    Mutation("a dead loop fails what it held", "e5/batcher.py",
             "        for job in pending:\n            job.fail(", "        for job in []:\n            job.fail(",
             BATCHER_TESTS),
    Mutation("a dead loop starts again", "e5/batcher.py",
             "        self.stats.restarts += 1\n        self._start()", "        self.stats.restarts += 1",
             BATCHER_TESTS),
    Mutation("a loop that keeps dying stops and reports unhealthy", "e5/batcher.py",
             "give_up = len(self._deaths) > RESTARTS_ALLOWED", "give_up = False", BATCHER_TESTS),
    Mutation("the forward is timed until its vectors are on the host", "e5/batcher.py",
             "vectors = self.embedder.forward(sequences, flags).cpu().numpy()\n            return vectors, "
             "time.perf_counter() - start",
             "launched = self.embedder.forward(sequences, flags)\n            seconds = time.perf_counter() - start\n"
             "            return launched.cpu().numpy(), seconds", BATCHER_TESTS),
    Mutation("out of memory: split and retry", "e5/engine.py",
             "            if len(sequences) == 1:\n                raise EngineError(",
             "            if True:\n                raise EngineError(", ("tests/test_engine.py",)),
    Mutation("out of memory: the failed attempt is freed before the retry", "e5/engine.py",
             "        except torch.OutOfMemoryError:\n            if len(sequences) == 1:",
             "        except torch.OutOfMemoryError as err:\n            self.last_failure = err  # its traceback kept"
             "\n            if len(sequences) == 1:", ("tests/test_engine.py",)),
    Mutation("out of memory: the CUDA cache is emptied", "e5/engine.py",
             "m.release_cached_memory(self.profile.device)", "pass", ("tests/test_engine.py",)),
    Mutation("the cache is emptied on CUDA only", "e5/model.py",
             '    if device.startswith("cuda"):\n        torch.cuda.empty_cache()', "    torch.cuda.empty_cache()",
             ("tests/test_engine.py",)),
    Mutation("E5_DEVICE=cuda is refused without CUDA", "e5/model.py",
             'if requested.startswith("cuda") and not torch.cuda.is_available():', "if False:",
             ("tests/test_engine.py", "tests/test_weights.py")),
    Mutation("truncate=false refuses a text past the limit", "e5/engine.py",
             "                if len(ids) > limit:\n", "                if False:\n",
             ("tests/test_predictor.py", "tests/test_files.py")),
    Mutation("texts per texts_file (E5_MAX_FILE_TEXTS)", "e5/service.py",
             "            if total > limit:", "            if False:", ("tests/test_files.py",)),
    Mutation("bytes per texts_file (E5_MAX_FILE_BYTES)", "e5/files.py",
             "    if size > limits.max_file_bytes:", "    if False:", ("tests/test_files.py",)),
    Mutation("texts per request", "e5/validation.py",
             "if len(value) > limits.max_texts:", "if False:", VALIDATION_TESTS),
    Mutation("characters per text", "e5/validation.py",
             "if len(text) > max_chars:", "if False:", VALIDATION_TESTS + ("tests/test_files.py",)),
    Mutation("characters per request", "e5/validation.py",
             "if total > limits.max_chars_per_request:", "if False:", VALIDATION_TESTS),
    Mutation("the task's characters count on each query", "e5/validation.py",
             'task = len(resolve_task(options.task)) if options.input_type == "query" and model.uses_task else 0', "task = 0",
             VALIDATION_TESTS),
    Mutation("the task length limit", "e5/validation.py",
             "if len(value) > limits.max_task_chars:", "if False:", VALIDATION_TESTS),
    Mutation("an empty task for queries", "e5/validation.py",
             "    if not value.strip():\n        raise InputError(\n            \"`task` is empty",
             "    if False:\n        raise InputError(\n            \"`task` is empty", VALIDATION_TESTS),
    Mutation("blank texts", "e5/validation.py",
             "if not text.strip():", "if False:", VALIDATION_TESTS),
    Mutation("lone surrogates", "e5/validation.py",
             '        text.encode("utf-8")', "        pass", VALIDATION_TESTS),
    Mutation("top_k=True is refused", "e5/validation.py",
             "if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= most:",
             "if not isinstance(number, int) or not 1 <= number <= most:", VALIDATION_TESTS),
    Mutation("top_k needs documents", "e5/validation.py",
             "if top_k is not None and documents is None:", "if False:", VALIDATION_TESTS),
    Mutation("memory budget: a small request never waits", "e5/budget.py",
             "if nbytes <= SMALL_REQUEST_BYTES:", "if False:", BUDGET_TESTS),
    Mutation("memory budget: a request larger than it is refused at once", "e5/budget.py",
             "if nbytes > self.budget_bytes:", "if False:", BUDGET_TESTS),
    Mutation("memory budget: a new request queues behind the waiters", "e5/budget.py",
             "if not self._waiters and self.large_bytes + nbytes <= self.budget_bytes:",
             "if self.large_bytes + nbytes <= self.budget_bytes:", BUDGET_TESTS),
    Mutation("memory budget: a grant that meets a cancel is given back", "e5/budget.py",
             "                self.release(future.result())", "                pass", BUDGET_TESTS),
    Mutation("memory budget: held until the response has left", "e5/service.py",
             "self.release_after_response(reservation, parts[\"ranking\"])", "self.budget.release(reservation)",
             BUDGET_TESTS),
    Mutation("memory budget: a refused request gives its reservation back", "e5/service.py",
             "            self.budget.release(reservation)  # nothing is returned: nothing left to hold",
             "            pass", BUDGET_TESTS),
]


def copy_of_repository() -> Path:
    """The files git tracks (and untracked ones it does not ignore), in a fresh folder."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    target = Path(tempfile.mkdtemp(prefix="e5-mutant-"))
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def run(mutation: Mutation) -> dict:
    tree = copy_of_repository()
    try:
        path = tree / mutation.path
        source = path.read_text(encoding="utf-8")
        if source.count(mutation.line) != 1:
            return {"mutation": mutation.name, "result": "stale", "found": source.count(mutation.line)}
        path.write_text(source.replace(mutation.line, mutation.replacement), encoding="utf-8")
        start = time.perf_counter()
        try:
            test = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                   *mutation.tests], cwd=tree, capture_output=True, text=True, timeout=HUNG_S,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
        except subprocess.TimeoutExpired:  # the tests hang instead of failing: not a kill
            return {"mutation": mutation.name, "result": "hung", "tests": list(mutation.tests), "seconds": HUNG_S}
        failed = [line.split(" - ")[0].removeprefix("FAILED ") for line in test.stdout.splitlines()
                  if line.startswith("FAILED ")]
        return {"mutation": mutation.name, "result": "killed" if test.returncode else "survived",
                "killed_by": failed[:1], "tests": list(mutation.tests), "seconds": round(time.perf_counter() - start)}
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run the mutations whose name contains this")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = []
    for mutation in MUTATIONS:
        if args.only and args.only not in mutation.name:
            continue
        result = run(mutation)
        results.append(result)
        print(f"{result['result']:8s} {mutation.name}  {' '.join(result.get('killed_by', []))}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    survived = [r for r in results if r["result"] != "killed"]
    print(f"{len(results) - len(survived)} of {len(results)} mutations killed")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
