"""Start the real Cog HTTP server (coglet) on 127.0.0.1 around this predictor, for tests and load tests.

    with CogServer(weights_dir=...) as server:
        server.predict({"texts": ["hello"]})

It runs with the image's 32 slots unless told otherwise: `cog build` bakes `ENV COG_MAX_CONCURRENCY=32` from
@concurrent(max=32) in predict.py, and coglet reads only that variable (default 1).

No Docker and no `cog` CLI needed: `python -m cog.server.http` is the same server `cog build` puts in the
image, and it runs in the repository root, where .cog/openapi_schema.json sits beside predict.py as in the
image: so it checks every request against the schema the image carries. The worker is spawned as `python`
from PATH, so the interpreter running this goes first on PATH.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from testkit.process import ROOT, ServerProcess, free_port  # noqa: F401 (free_port: tests import it from here)

SCHEMA = ROOT / ".cog" / "openapi_schema.json"  # the server reads it from its working directory
BULK_SCHEMA = ROOT / ".cog" / "openapi_schema.bulk.json"  # the bulk model's (cog.bulk.yaml)
IMAGE_SLOTS = 32  # = @concurrent(max=32) in predict.py (tests/test_cog_schema.py ties them)


class CogServer(ServerProcess):
    def __init__(self, weights_dir: str | Path, concurrency: int = IMAGE_SLOTS, env: dict[str, str] | None = None, log_path=None):
        super().__init__(weights_dir, env, log_path)
        self.concurrency = concurrency

    def command(self) -> list[str]:
        return [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"]

    def environment(self) -> dict[str, str]:
        return {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "COG_PREDICT_TYPE_STUB": "predict.py:Predictor",
            "PORT": str(self.port),
            "COG_MAX_CONCURRENCY": str(self.concurrency),
        }

    def __enter__(self) -> "CogServer":
        if not SCHEMA.is_file():  # without it the server checks nothing: a server no image runs
            raise FileNotFoundError(f"{SCHEMA} is missing: run `python scripts/cog_schema.py --write`")
        return super().__enter__()

    def status(self) -> str | None:
        try:
            return self.get("/health-check").get("status")
        except (urllib.error.URLError, ConnectionError, OSError):
            return None

    def wait_until(self, statuses=("READY", "SETUP_FAILED"), timeout: float = 180.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cog server exited with code {self.proc.returncode}")
            status = self.status()
            if status in statuses:
                return status
            time.sleep(0.25)
        raise TimeoutError(f"cog server not in {statuses} after {timeout}s (last: {self.status()})")

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: bytes, timeout: float = 300.0, method: str = "POST") -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw or b"{}")
            except ValueError:
                return err.code, {"raw": raw.decode("utf-8", "replace")}

    def predict(self, inputs: dict, timeout: float = 300.0) -> tuple[int, dict]:
        return self.post("/predictions", json.dumps({"input": inputs}).encode(), timeout=timeout)


class BulkCogServer(CogServer):
    """The bulk model's server (cog.bulk.yaml) as its image runs it: predict_bulk.py with its own schema at
    .cog/openapi_schema.json (a folder of links to this repository, since coglet reads the schema from its
    working directory), one slot, and Cog's uploads sent to `upload_url` as Replicate starts it."""

    def __init__(self, weights_dir: str | Path, workdir: Path, upload_url: str | None = None,
                 env: dict[str, str] | None = None, log_path=None):
        super().__init__(weights_dir, concurrency=1, env=env, log_path=log_path)
        self.upload_url = upload_url
        (workdir / ".cog").mkdir(parents=True, exist_ok=True)
        for name in ("e5", "predict_bulk.py"):
            link = workdir / name
            if not link.exists():
                link.symlink_to(ROOT / name)
        (workdir / ".cog" / "openapi_schema.json").write_bytes(BULK_SCHEMA.read_bytes())
        self.cwd = workdir

    def command(self) -> list[str]:
        upload = ["--upload-url", self.upload_url] if self.upload_url else []
        return [*super().command(), *upload]

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "COG_PREDICT_TYPE_STUB": "predict_bulk.py:Predictor"}

    def __enter__(self) -> "BulkCogServer":
        return ServerProcess.__enter__(self)
