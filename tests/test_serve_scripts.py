"""The two serve scripts as a newcomer runs them, on a fresh checkout (the repository's files, no weights, no
environments) with the Hugging Face Hub out of reach: each serves the embedded model and says so; with
E5_WEIGHTS_DIR it serves that checkpoint and tries no download; E5_SERVE_MODEL=real with nothing to serve fails
with the way out. The scripts install their environment themselves: the first test pays for it (minutes), the
others reuse it, as a second run on a user's machine does."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from testkit.process import ROOT, free_port

INSTALL_AND_LOAD_S = 1200  # a fresh install of the runtime (torch, transformers, ...) on a slow link, then setup


class Recorder(http.server.BaseHTTPRequestHandler):
    """A stand-in Hugging Face Hub that answers nothing useful and counts what reached it."""

    hits: list[str] = []

    def do_GET(self):
        Recorder.hits.append(self.path)
        self.send_response(503)
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hub():
    Recorder.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The repository's tracked and untracked-but-not-ignored files, as a fresh clone has them; one for the
    whole module, so the first script run installs .venv-serve and the later ones reuse it."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    folder = tmp_path_factory.mktemp("checkout") / "e5-cog"
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    assert not (folder / "weights" / "model.safetensors").exists() and not (folder / ".venv-serve").exists()
    return folder


def start(checkout: Path, script: str, env: dict, log: Path) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("E5_", "VIRTUAL_ENV"))}
    return subprocess.Popen(["bash", f"scripts/{script}"], cwd=checkout, env={**base, **env},
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


READY = {  # each script's health route, and the answer that means it serves
    "serve.sh": ("/health-check", lambda body: body.get("status") == "READY"),
    "serve_openai.sh": ("/health", lambda body: body.get("status") == "ready"),
}


@contextlib.contextmanager
def serving(checkout: Path, script: str, env: dict, log: Path):
    """The script started and serving (its base URL), stopped on leaving."""
    port = free_port()
    proc = start(checkout, script, {**env, "PORT": str(port)}, log)
    url = f"http://127.0.0.1:{port}"
    route, ready = READY[script]
    try:
        deadline = time.monotonic() + INSTALL_AND_LOAD_S
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
            try:
                if ready(get(url + route)[1]):
                    break
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                pass
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_sh_with_no_weights_and_no_hub_serves_the_embedded_model_and_says_so(checkout, hub, tmp_path):
    log = tmp_path / "serve.log"
    with serving(checkout, "serve.sh", {"HF_ENDPOINT": hub}, log) as url:
        out = post(url + "/predictions", {"input": {"texts": ["how much protein should a woman eat"]}})
    text = log.read_text(errors="replace")
    assert "Serving the EMBEDDED model: intfloat/multilingual-e5-small" in text
    assert "the Hugging Face Hub could not be reached" in text and "E5_WEIGHTS_DIR=/path/to/checkpoint" in text
    assert out["status"] == "succeeded", out
    assert out["output"]["dimensions"] == 384 and len(out["output"]["embeddings"][0]) == 384
    assert out["output"]["model"] == "intfloat/multilingual-e5-small"


def test_serve_openai_sh_with_no_weights_and_no_hub_serves_the_embedded_model_and_names_it(checkout, hub, tmp_path):
    log = tmp_path / "serve.log"
    with serving(checkout, "serve_openai.sh", {"HF_ENDPOINT": hub}, log) as url:
        out = post(url + "/v1/embeddings", {"input": ["how much protein should a woman eat"]})
        models, health = get(url + "/v1/models")[1], get(url + "/health")[1]
    assert "Serving the EMBEDDED model" in log.read_text(errors="replace")
    assert out["model"] == "intfloat/multilingual-e5-small" and len(out["data"][0]["embedding"]) == 384
    assert [m["id"] for m in models["data"]] == ["intfloat/multilingual-e5-small"]
    assert health["model"] == "intfloat/multilingual-e5-small"


def test_with_e5_weights_dir_that_checkpoint_is_served_and_no_download_is_tried(checkout, hub, checkpoint_dir, tmp_path):
    Recorder.hits = []
    log = tmp_path / "serve.log"
    with serving(checkout, "serve.sh", {"HF_ENDPOINT": hub, "E5_WEIGHTS_DIR": str(checkpoint_dir)}, log) as url:
        out = post(url + "/predictions", {"input": {"texts": ["hello"]}})
    text = log.read_text(errors="replace")
    assert Recorder.hits == [] and "downloading" not in text and "EMBEDDED" not in text
    assert f"serving the checkpoint in E5_WEIGHTS_DIR={checkpoint_dir}" in text
    assert out["status"] == "succeeded" and out["output"]["dimensions"] == 1024, out


def test_the_real_model_only_with_none_present_fails_with_the_way_out(checkout, hub, tmp_path):
    log = tmp_path / "serve.log"
    proc = start(checkout, "serve.sh", {"PORT": str(free_port()), "HF_ENDPOINT": hub, "E5_SERVE_MODEL": "real"}, log)
    assert proc.wait(timeout=INSTALL_AND_LOAD_S) == 1
    text = log.read_text(errors="replace")
    assert "E5_SERVE_MODEL=real, and no real weights could be had" in text and "E5_WEIGHTS_DIR" in text
    assert "EMBEDDED" not in text


def test_a_bad_model_choice_names_the_variable(checkout, tmp_path):
    log = tmp_path / "serve.log"
    proc = start(checkout, "serve.sh", {"E5_SERVE_MODEL": "small"}, log)
    assert proc.wait(timeout=60) == 2
    assert "E5_SERVE_MODEL must be auto, real or embedded, got 'small'" in log.read_text()
