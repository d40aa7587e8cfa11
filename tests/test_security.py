"""Hostile requests to the Cog face as the image runs it (coglet, 32 slots, the published schema): a
`texts_file` that names a path on the server, another user's upload or the worker's stdin; a URL on an
internal address; a body of items that each fail the schema. Each is refused cleanly, within a memory bound
(peak resident memory of the server and its worker), and a neighbour's request meanwhile answers exactly.
The checks the refusals rest on (e5/uploads.py, files.open_regular) are tested here without a server too.
docs/reliability.md ("Security") gives each attack and its figures."""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from benchmarks.bulk_run import child_pids, memory_mb, peaks_during
from benchmarks.loadtest import send_retrying_busy
from e5 import uploads
from e5.errors import InputError
from e5.files import open_regular
from e5.form import texts_from_box
from testkit.cog_server import CogServer

NEVER_READ = "`texts_file` must be a file you upload (a data: URL, `cog predict -i texts_file=@file`) or an http(s) URL; a path on the server is never read"
PRIVATE = "`texts_file` is a URL on a private or local address"
NEIGHBOUR_TEXTS = [f"passage {i}: how much protein a woman needs, 南瓜的家常做法 {i % 7}" for i in range(3000)]
QUIET_RISE_MB = 64  # what a refused request may add to server + worker at their peak


def data_url(mime: str, content: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(content).decode()


@pytest.fixture(scope="module")
def temp_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("security-tmp")


@pytest.fixture(scope="module")
def server(checkpoint_dir, temp_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("security-server") / "server.log"
    with CogServer(checkpoint_dir, env={"TMPDIR": str(temp_dir), "MALLOC_ARENA_MAX": "2"}, log_path=log) as s:
        assert s.wait_until() == "READY", log.read_text()[-3000:]
        s.predict({"texts": ["warm up"]})
        yield s


def retrying_409(server, inputs: dict) -> tuple[int, dict]:
    """(status, body), retrying coglet's 409 with free slots as docs/reliability.md tells clients: these tests
    overlap requests on purpose, and are not about that 409."""
    result = send_retrying_busy(server, inputs)
    return result["status"], result["body"]


def pids(server) -> dict[str, int]:
    return {"server": server.proc.pid, "worker": child_pids(server.proc.pid)[0]}


def rise_mb(before: dict, peaks: dict) -> float:
    return sum(peaks[name] - before[name] for name in peaks)


def vectors_of(output: dict) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(output["embeddings_file"].split(",", 1)[1])))


def base64_vectors(output: dict) -> np.ndarray:
    return np.stack([np.frombuffer(base64.b64decode(v), dtype="<f4") for v in output["embeddings_base64"]])


# --- paths on the server ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/etc/passwd", "etc/passwd", "/proc/self/environ", "/dev/zero", "file:///etc/passwd",
                                  "/tmp", "../../../../etc/passwd"])
def test_a_path_on_the_server_is_refused_before_anything_is_read(server, path):
    (answer, before, peaks, _) = peaks_during(pids(server), lambda: server.predict({"texts_file": path}))
    status, body = answer
    assert status == 200 and body["status"] == "failed", body
    assert NEVER_READ in body["error"] and body.get("output") is None, body
    assert rise_mb(before, peaks) < QUIET_RISE_MB


def test_dev_stdin_eight_times_leaves_the_worker_healthy_and_every_kind_of_request_answering(server):
    for _ in range(8):
        status, body = server.predict({"texts_file": "/dev/stdin"}, timeout=30)
        assert body["status"] == "failed" and NEVER_READ in body["error"], body
    assert server.status() == "READY"
    requests_ = [
        {"texts": ["how much protein"], "documents": ["46 grams a day", "pumpkin soup"]},
        {"texts": ["long " * 11_000], "input_type": "document"},  # over 50,000 characters: tokenized off the loop
        {"texts_file": data_url("text/plain", b"one\ntwo\n")},
    ]
    for request in requests_:
        status, body = server.predict(request, timeout=60)
        assert body["status"] == "succeeded", (request, body)


def test_a_neighbours_upload_cannot_be_read_by_its_fd_or_its_path_and_the_neighbour_gets_its_vectors(server, temp_dir):
    """While another user's bulk job reads its upload, its open descriptor (/proc/self/fd/N) and its exact path
    in the temp folder are both refused; the job's vectors equal the same texts sent as `texts`."""
    worker = pids(server)["worker"]
    answer = {}
    upload = data_url("text/plain", "\n".join(NEIGHBOUR_TEXTS).encode())

    def neighbour():
        answer["status"], answer["body"] = retrying_409(server, {"texts_file": upload, "input_type": "document"})

    thread = threading.Thread(target=neighbour)
    thread.start()
    seen: tuple[str, str] | None = None
    deadline = time.monotonic() + 60
    while seen is None and thread.is_alive() and time.monotonic() < deadline:
        for fd in Path(f"/proc/{worker}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(os.path.realpath(temp_dir)) and re.search(r"/tmp[a-z0-9_]{8}file\.txt$", target):
                seen = (f"/proc/self/fd/{fd.name}", target)
                break
        time.sleep(0.01)
    assert seen is not None, "the neighbour's upload was never seen open"
    for path in seen:
        status, body = retrying_409(server, {"texts_file": path})
        assert body["status"] == "failed" and NEVER_READ in body["error"], (path, body)
        assert body.get("output") is None
    thread.join(timeout=120)
    assert answer["body"]["status"] == "succeeded", answer
    got = vectors_of(answer["body"]["output"])
    status, alone = server.predict({"texts": NEIGHBOUR_TEXTS, "input_type": "document", "encoding_format": "base64"})
    assert alone["status"] == "succeeded", alone
    assert got.shape == (len(NEIGHBOUR_TEXTS), 1024)
    assert np.abs(got - base64_vectors(alone["output"])).max() < 1e-5


# --- a body whose items each fail the schema -----------------------------------------------------------------

# What coglet 0.23.1 takes to answer such a body, per MB of body (measured: ~1,090; benchmarks/cog_body_cost.py).
# docs/reliability.md states it, and the request-size bound an operator puts in front of the server rests on it.
COGLET_422_MB_PER_BODY_MB = 1_250


def test_a_schema_bomb_gets_coglets_422_within_the_stated_cost_per_mb_and_a_neighbour_answers_exactly(server):
    from benchmarks.cog_body_cost import bomb

    query = {"texts": ["how much protein should a female eat"], "encoding_format": "base64"}
    status, alone = server.predict(query)
    body = bomb(0.25)
    answers = {}

    def neighbour():
        time.sleep(0.3)  # while coglet builds the 422
        answers["neighbour"] = retrying_409(server, query)

    thread = threading.Thread(target=neighbour)
    thread.start()
    (answer, before, peaks, _) = peaks_during(pids(server), lambda: server.post("/predictions", body, timeout=300))
    thread.join(timeout=120)
    status, refusal = answer
    assert status == 422 and refusal["detail"][0]["loc"][:3] == ["body", "input", "texts/1"], str(refusal)[:500]
    assert rise_mb(before, peaks) < COGLET_422_MB_PER_BODY_MB * len(body) / 1e6
    _, meanwhile = answers["neighbour"]
    assert meanwhile["status"] == "succeeded", meanwhile
    assert np.abs(base64_vectors(meanwhile["output"]) - base64_vectors(alone["output"])).max() < 1e-5


# --- URLs on internal addresses ----------------------------------------------------------------------------


class Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):
        Recorder.hits.append(self.path)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/texts.txt")
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"internal secret one\ninternal secret two\n")

    def log_message(self, *args):
        pass


@pytest.fixture
def internal_host():
    Recorder.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_a_url_on_an_internal_address_is_refused_before_any_request_is_made(server, internal_host):
    for url in (f"http://127.0.0.1:{internal_host}/texts.txt", f"http://localhost:{internal_host}/texts.txt",
                "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/texts.txt", "http://10.0.0.1:9/t.txt"):
        status, body = server.predict({"texts_file": url}, timeout=60)
        assert body["status"] == "failed" and PRIVATE in body["error"], (url, body)
    assert Recorder.hits == []
    status, body = server.predict({"texts": ["the server carries on"]})
    assert body["status"] == "succeeded", body


# --- the checks themselves, without a server ---------------------------------------------------------------


def test_a_recorded_download_is_claimed_once_and_nothing_else_ever():
    downloads = uploads.Downloads()
    downloads.record("/tmp/tmpab12cd34file.txt")
    assert downloads.claim(None) is None
    with pytest.raises(InputError, match="a path on the server is never read") as err:
        downloads.claim("/etc/passwd")
    assert err.value.code == "bad_file"
    assert downloads.claim(Path("/tmp/tmpab12cd34file.txt")) == Path("/tmp/tmpab12cd34file.txt")
    with pytest.raises(InputError, match="never read"):  # a second request naming the same file
        downloads.claim("/tmp/tmpab12cd34file.txt")
    with pytest.raises(InputError, match="never read"):
        downloads.claim(12)


def test_unclaimed_downloads_are_forgotten_oldest_first():
    downloads = uploads.Downloads()
    for i in range(uploads.MAX_UNCLAIMED + 1):
        downloads.record(f"/tmp/d{i}")
    with pytest.raises(InputError):
        downloads.claim("/tmp/d0")
    assert downloads.claim(f"/tmp/d{uploads.MAX_UNCLAIMED}") is not None


@pytest.mark.parametrize("address, public", [
    ("93.184.216.34", True), ("2606:2800:220:1:248:1893:25c8:1946", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("::1", False), ("fe80::1%eth0", False),
    ("fd00::1", False), ("::ffff:127.0.0.1", False), ("224.0.0.1", False),
])
def test_which_addresses_are_public(address, public):
    assert uploads.is_public(address) is public


def test_a_public_name_passes_and_a_name_that_resolves_inside_is_refused():
    def resolve(answers):
        return lambda host, port: [(2, 1, 6, "", (a, 0)) for a in answers[host]]

    uploads.public_url("https://files.example/t.txt", resolve({"files.example": ["93.184.216.34"]}))
    with pytest.raises(InputError, match=r"private or local address \(files\.example\)") as err:
        uploads.public_url("https://files.example/t.txt", resolve({"files.example": ["93.184.216.34", "10.0.0.7"]}))
    assert err.value.code == "private_url" and "E5_ALLOW_PRIVATE_URLS=1" in str(err.value)

    def unresolvable(host, port):
        raise OSError("no such name")

    uploads.public_url("https://nowhere.example/t.txt", unresolvable)  # left to the download's own error


class FakeURLPath:
    """Cog's URLPath as convert() sees it: the source URL and the file object that fetches it."""

    def __init__(self, source, fileobj):
        self.source, self.fileobj, self.converted = source, fileobj, False

    def convert(self):
        self.converted = True
        return Path("/tmp/tmpzz99yy88file.txt")


def test_a_redirect_to_an_internal_address_is_refused_before_the_body_is_copied(internal_host):
    """The source name resolves nowhere here (so only the address reached can be checked): a real streamed
    response that was redirected to 127.0.0.1 is refused before convert() copies it."""

    class Watched(FakeURLPath):
        pass

    downloads = uploads.Downloads()
    uploads.watch(Watched, downloads)
    raw = requests.get(f"http://127.0.0.1:{internal_host}/redirect", stream=True, timeout=10).raw
    item = Watched("https://files.invalid/texts.txt", raw)
    with pytest.raises(InputError, match=re.escape(PRIVATE)):
        item.convert()
    assert not item.converted and Recorder.hits == ["/redirect", "/texts.txt"]


def test_watch_records_every_file_convert_writes_is_idempotent_and_can_allow_internal_hosts(internal_host):
    class Watched(FakeURLPath):
        pass

    downloads = uploads.Downloads()
    uploads.watch(Watched, downloads)
    uploads.watch(Watched, downloads, allow_private=True)  # set up twice: one wrapper, the last setting
    assert Watched.convert.__wrapped__ is FakeURLPath.convert
    item = Watched(f"http://127.0.0.1:{internal_host}/texts.txt", None)
    assert item.convert() == Path("/tmp/tmpzz99yy88file.txt") and item.converted
    assert downloads.claim("/tmp/tmpzz99yy88file.txt") == Path("/tmp/tmpzz99yy88file.txt")
    data = Watched("data:text/plain;base64,aGk=", None)  # a data URL is decoded, never fetched: no check
    uploads.watch(Watched, downloads)
    assert data.convert() == Path("/tmp/tmpzz99yy88file.txt")


@pytest.mark.parametrize("raw, allowed", [("", False), ("0", False), ("1", True), (" 1 ", True)])
def test_private_urls_are_refused_unless_the_operator_allows_them(raw, allowed):
    assert uploads.private_urls_allowed({"E5_ALLOW_PRIVATE_URLS": raw}) is allowed


def test_a_bad_allow_private_urls_value_names_the_variable():
    with pytest.raises(ValueError, match="E5_ALLOW_PRIVATE_URLS must be 1"):
        uploads.private_urls_allowed({"E5_ALLOW_PRIVATE_URLS": "yes"})


def test_only_a_regular_file_is_opened_and_a_link_or_fifo_is_never_followed_or_waited_on(tmp_path):
    regular = tmp_path / "texts.txt"
    regular.write_text("one\n")
    with open_regular(regular) as f:
        assert f.read() == b"one\n"
    link = tmp_path / "tmpab12cd34file.txt"
    link.symlink_to("/etc/passwd")
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    for path, message in ((link, "it is a link"), (fifo, "not a regular file"), (Path("/dev/zero"), "not a regular file"),
                          (tmp_path, "not a regular file"), (tmp_path / "missing.txt", "No such file")):
        with pytest.raises(InputError, match=message) as err:
            open_regular(path)
        assert err.value.code == "bad_file"


def test_the_text_box_breaks_lines_where_a_txt_file_does():
    """Only \\r\\n, \\r and \\n end a text: a form feed or U+2028 inside a line stays in its text, so row i of
    the box is row i of the same lines uploaded as a .txt file."""
    box = "one\x0cstill one\r\ntwo\u2028still two\rthree\x85\nfour\n"
    assert texts_from_box(box) == ["one\x0cstill one", "two\u2028still two", "three\x85", "four"]
