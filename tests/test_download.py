"""The weights download script, offline: verification, idempotence and a clear message without network."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from scripts import download_weights as dw
from testkit.cog_server import free_port


def test_verify_accepts_the_right_file_and_rejects_altered_ones(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"weights" * 100)
    digest = hashlib.sha256(f.read_bytes()).hexdigest()
    dw.verify(f, size=700, sha256=digest)
    with pytest.raises(dw.DownloadError, match="699|700 bytes, expected 699"):
        dw.verify(f, size=699, sha256=digest)
    with pytest.raises(dw.DownloadError, match="sha256 does not match"):
        dw.verify(f, size=700, sha256="0" * 64)


def test_git_blob_id_matches_git(tmp_path):
    f = tmp_path / "config.json"
    f.write_text('{"a": 1}\n')
    out = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True)
    assert dw.git_blob_sha1(f) == out.stdout.strip()
    dw.verify(f, size=9, blob_id=out.stdout.strip())
    with pytest.raises(dw.DownloadError, match="git blob id does not match"):
        dw.verify(f, size=9, blob_id="0" * 40)


def offline_env():
    # A closed port on loopback stands in for the hub: any request fails at once.
    return {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HUB_DISABLE_TELEMETRY": "1"}


def test_offline_fails_with_a_clear_message(tmp_path):
    env = {**offline_env(), "PATH": "", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, dw.__file__, "--dest", str(tmp_path / "w")], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 1
    assert "cannot reach the Hugging Face hub" in result.stderr and "offline" in result.stderr
    assert not (tmp_path / "w" / "model.safetensors").exists()


def test_a_verified_folder_is_left_alone_without_network(tmp_path):
    dest = tmp_path / "w"
    dest.mkdir()
    files = {}
    for name in dw.FILES:
        (dest / name).write_bytes(name.encode())
        files[name] = {"size": len(name.encode()), "sha256": None, "blob_id": None}
    (dest / dw.MANIFEST).write_text(json.dumps({"revision": dw.REVISION, "files": files}))
    env = {**offline_env(), "PATH": "", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, dw.__file__, "--dest", str(dest)], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "already present and verified" in result.stdout
    (dest / "model.safetensors").write_bytes(b"x")  # a changed size means: fetch again
    assert not dw.already_present(dest)
