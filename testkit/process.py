"""A server under test as its own process: started from the repository root on a free loopback port, its
output in a log file (or discarded), stopped on exit. testkit.cog_server and testkit.openai_server say what runs."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, weights_dir: str | Path, env: dict[str, str] | None = None, log_path: str | Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.weights_dir = str(weights_dir)
        self.extra_env = env or {}
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self.cwd = ROOT  # where the server runs (and reads .cog/openapi_schema.json)

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """The server's own variables; the caller's `env` comes after them and wins."""
        return {}

    def __enter__(self):
        env = {**os.environ, "E5_WEIGHTS_DIR": self.weights_dir, **self.environment(), **self.extra_env}
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), cwd=self.cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
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
