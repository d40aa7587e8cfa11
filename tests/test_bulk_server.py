"""`texts_file` through the real Cog server (coglet), as `cog predict -i texts_file=@...` and data-URL clients
send it: the upload's name comes from its MIME type, the result comes back as a data URL, and the temp folder
keeps nothing of ours after a job that succeeded, failed or was cancelled."""

from __future__ import annotations

import base64
import gzip
import io
import json
import threading
import time

import numpy as np
import pytest

from testkit.cog_server import CogServer
from e5.bulk import RESULT_PREFIX

TEXTS = [f"passage {i}: the protein women need, 南瓜的家常做法" + " more" * (i % 5) for i in range(12)]


@pytest.fixture(scope="module")
def temp_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("server-tmp")


@pytest.fixture(scope="module")
def server(checkpoint_dir, temp_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("bulk-server") / "server.log"
    with CogServer(checkpoint_dir, concurrency=4, env={"TMPDIR": str(temp_dir)}, log_path=log) as s:
        assert s.wait_until() == "READY", log.read_text()[-3000:]
        yield s


def data_url(mime: str, content: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(content).decode()


def ours(temp_dir) -> list[str]:
    return sorted(p.name for p in temp_dir.iterdir() if p.name.startswith("e5-"))


def nothing_of_ours_within(temp_dir, seconds: float = 10.0) -> list[str]:
    """Our entries in the server's temp folder, once empty or after `seconds` (coglet frees the output late)."""
    deadline = time.monotonic() + seconds
    while ours(temp_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    return ours(temp_dir)


@pytest.fixture(scope="module")
def direct(predictor, loop):
    from conftest import DEFAULTS

    out = loop.run_until_complete(predictor.predict(**{**DEFAULTS, "texts": TEXTS, "input_type": "document"}))
    return np.array(out.embeddings, dtype=np.float32)


@pytest.mark.parametrize(
    "mime, content",
    [  # the upload lands as file.bin, file (no suffix), file.gz, file.csv, file.txt
        ("application/octet-stream", "".join(json.dumps({"text": t}) + "\n" for t in TEXTS).encode()),
        ("application/x-ndjson", "".join(json.dumps({"text": t}) + "\n" for t in TEXTS).encode()),
        ("application/gzip", gzip.compress(("\n".join(TEXTS) + "\n").encode())),
        ("text/csv", b"\xef\xbb\xbfid,text\r\n" + "".join(f'{i},"{t}"\r\n' for i, t in enumerate(TEXTS)).encode()),
        ("text/plain", ("\r\n".join(TEXTS) + "\r\n\r\n").encode()),
    ],
)
def test_an_upload_of_any_mime_type_is_read_and_its_vectors_come_back(server, direct, mime, content):
    status, body = server.predict({"texts_file": data_url(mime, content), "input_type": "document"})
    assert status == 200 and body["status"] == "succeeded", body
    out = body["output"]
    assert out["embeddings"] == [] and out["token_counts"] and len(out["token_counts"]) == len(TEXTS)
    prefix, encoded = out["embeddings_file"].split(",", 1)
    assert prefix.startswith("data:") and prefix.endswith(";base64")
    vectors = np.load(io.BytesIO(base64.b64decode(encoded)))
    assert vectors.shape == (len(TEXTS), 1024)
    assert np.abs(vectors - direct).max() < 1e-5


def test_a_bad_upload_fails_with_the_line_and_leaves_nothing(server, temp_dir):
    status, body = server.predict({"texts_file": data_url("text/plain", b"fine\ncaf\xe9\n")})
    assert status == 200 and body["status"] == "failed"
    assert "`texts_file` line 2 is not UTF-8 text: byte 0xE9 at offset 8 of the file" in body["error"], body
    assert nothing_of_ours_within(temp_dir) == []


def test_the_temp_folder_keeps_nothing_of_ours_after_a_job(server, temp_dir):
    status, body = server.predict({"texts_file": data_url("text/plain", "\n".join(TEXTS).encode())})
    assert body["status"] == "succeeded", body
    assert nothing_of_ours_within(temp_dir) == []

    # Cancelled while it writes: 3,000 texts take a few seconds on the test checkpoint.
    many = "\n".join(f"query {i} about protein and pumpkins" for i in range(3000)).encode()
    answer = {}

    def run():
        request = {"id": "bulk-cancel", "input": {"texts_file": data_url("text/plain", many)}}
        answer["status"], answer["body"] = server.post("/predictions/bulk-cancel", json.dumps(request).encode(),
                                                       method="PUT")

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(RESULT_PREFIX) for p in temp_dir.iterdir()):
        assert time.monotonic() < deadline and thread.is_alive(), answer
        time.sleep(0.05)
    assert server.post("/predictions/bulk-cancel/cancel", b"")[0] == 200
    thread.join(timeout=60)
    assert answer["body"]["status"] == "canceled", answer
    assert nothing_of_ours_within(temp_dir) == []
    status, body = server.predict({"texts": ["the server carries on"]})
    assert body["status"] == "succeeded", body
