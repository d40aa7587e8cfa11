"""Start the OpenAI-compatible server (`python -m openai_api`) on 127.0.0.1, for tests and load tests.

    with OpenAIServer(weights_dir=..., env={"E5_API_KEY": "k"}) as server:
        server.wait_until_ready()
        httpx.post(server.url + "/v1/embeddings", json={"input": "hello"})

The same command the image runs (`python -m openai_api --host ... --port ...`), from the repository root, as
its own process: what is tested is the server a self-hoster runs, over HTTP.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from testkit.process import ServerProcess


class OpenAIServer(ServerProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "openai_api", "--host", "127.0.0.1", "--port", str(self.port)]

    def environment(self) -> dict[str, str]:
        return {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}

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


def start_server(weights_dir, log_path, env: dict | None = None) -> OpenAIServer:
    """A server started and ready (stopped again if it does not get ready), for a module's fixture to stop."""
    server = OpenAIServer(weights_dir, env=env, log_path=log_path)
    server.__enter__()
    try:
        server.wait_until_ready()
    except Exception:
        server.stop()
        raise
    return server
