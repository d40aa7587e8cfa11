"""Start the OpenAI-compatible server (`python -m openai_api`) on 127.0.0.1, for tests and load tests.

    with OpenAIServer(weights_dir=..., env={"E5_API_KEY": "k"}) as server:
        server.wait_until_ready()
        httpx.post(server.url + "/v1/embeddings", json={"input": "hello"})

The same command the image runs (`python -m openai_api --host ... --port ...`), from the repository root, as
its own process: what is tested is the server a self-hoster runs, over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from testkit.cog_server import free_port

ROOT = Path(__file__).resolve().parent.parent


class OpenAIServer:
    def __init__(self, weights_dir: str | Path, env: dict[str, str] | None = None, log_path: str | Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.weights_dir = str(weights_dir)
        self.extra_env = env or {}
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "OpenAIServer":
        env = {
            **os.environ,
            "E5_WEIGHTS_DIR": self.weights_dir,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openai_api", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_path and self._log is not subprocess.DEVNULL:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path else ""

    def health(self) -> tuple[int, dict] | None:
        """(status code, body) of GET /health, or None while nothing listens."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")
        except (urllib.error.URLError, ConnectionError, OSError):
            return None

    def wait_until_ready(self, timeout: float = 180.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}:\n{self.log()[-3000:]}")
            answer = self.health()
            if answer and answer[1].get("status") == "ready":
                return answer[1]
            time.sleep(0.2)
        raise TimeoutError(f"the server was not ready after {timeout}s (last: {self.health()})")

    def wait_for_exit(self, timeout: float = 180.0) -> int:
        return self.proc.wait(timeout=timeout)
