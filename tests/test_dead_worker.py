"""A dead worker (the kernel's out-of-memory killer sends SIGKILL) on the real Cog server: coglet 0.23 never
starts a new one, so the health check must say so and a deployment must restart the container. The probe
command is the one docs/reliability.md gives ("A dead worker"), run here as written, with the test's port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from testkit.cog_server import ROOT, CogServer

DOC = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
PROBE = re.search(r"^(python3? -c \"import json.*health-check.*\")$", DOC, re.M).group(1)
HEALTH_CMD = re.search(r"--health-cmd '(.*)' \\$", DOC, re.M).group(1)  # what Docker runs with /bin/sh -c


def kubernetes_probe(port: int) -> int:
    """The livenessProbe's exec command from the doc's YAML, run as the kubelet runs it: argv, no shell."""
    import yaml

    spec = yaml.safe_load(re.search(r"```yaml\n(.*?)```", DOC, re.S).group(1))
    argv = [arg.replace("127.0.0.1:5000", f"127.0.0.1:{port}") for arg in spec["livenessProbe"]["exec"]["command"]]
    return subprocess.run(argv, timeout=30).returncode


def probe(port: int, command: str = PROBE) -> int:
    command = command.replace("127.0.0.1:5000", f"127.0.0.1:{port}").replace("|| kill 1", "|| exit 7")
    return subprocess.run(["/bin/sh", "-c", command], timeout=30).returncode


@pytest.fixture
def server(checkpoint_dir, tmp_path):
    with CogServer(checkpoint_dir, concurrency=2, log_path=tmp_path / "server.log") as s:
        assert s.wait_until() == "READY", (tmp_path / "server.log").read_text()[-3000:]
        yield s


def test_a_killed_worker_turns_the_probe_red_and_stays_dead(server):
    from benchmarks.bulk_run import child_pids

    assert probe(server.port) == 0 and probe(server.port, HEALTH_CMD) == 0 and kubernetes_probe(server.port) == 0
    status, body = server.predict({"texts": ["hello"]})
    assert status == 200 and body["status"] == "succeeded"
    os.kill(child_pids(server.proc.pid)[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while server.status() not in ("UNHEALTHY", "DEFUNCT") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert server.status() in ("UNHEALTHY", "DEFUNCT")
    assert probe(server.port) == 1 and probe(server.port, HEALTH_CMD) == 7 and kubernetes_probe(server.port) == 1
    status, body = server.predict({"texts": ["hello"]}, timeout=60)
    assert body.get("status") != "succeeded", body  # no new worker: only a restart of the container helps
    assert child_pids(server.proc.pid) == [] or server.status() in ("UNHEALTHY", "DEFUNCT")
