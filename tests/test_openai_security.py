"""The OpenAI-compatible server (openai_api.py) under hostile clients, as its own process over HTTP: bodies
built to cost far more than their bytes, refused bodies that should be freed at once, clients that send
slowly or not at all, requests that fill every place in flight, and the small things (auth scheme case, a key
that cannot be sent, the rerank names). Limits are small here, through the environment, so each attack is
cheap to mount; docs/openai.md gives the defaults and what a body costs."""

from __future__ import annotations

import asyncio
import gc
import json
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

import openai_api
from benchmarks.body_cost import bodies
from benchmarks.bulk_run import memory_mb, reset_peak
from testkit.openai_server import OpenAIServer
from testkit.synthetic_checkpoint import SEED_WORDS

KEY = "sk-security-test"
AUTH = {"authorization": f"Bearer {KEY}"}
TOLERANCE = 1e-5  # as tests/test_openai_api.py: a text's vector depends a little on the forward it shares
BODY_TIMEOUT_S, IDLE_TIMEOUT_S = 2, 1
ENV = {"E5_API_KEY": KEY, "E5_API_MAX_REQUESTS": "2", "E5_API_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
       "E5_API_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S)}
BOMB_BYTES = 4_000_000
# What a body may cost the server at its peak, per byte of body (docs/openai.md, "What a body costs"):
# its bytes and its decoded text (measured ~2x), plus room for the allocator's own rounding.
BODY_MULTIPLE, SLACK_MB = 3, 40
NEIGHBOUR = ["how much protein should a female eat", "南瓜的家常做法"]


@pytest.fixture(scope="module")
def server(checkpoint_dir, tmp_path_factory):
    server = OpenAIServer(checkpoint_dir, env=ENV, log_path=tmp_path_factory.mktemp("guarded") / "server.log")
    server.__enter__()
    try:
        server.wait_until_ready()
        yield server
    finally:
        server.stop()


def post(server: OpenAIServer, path: str, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**AUTH, "content-type": "application/json", **kwargs.pop("headers", {})}
    return httpx.post(server.url + path, content=content, headers=headers, timeout=300, **kwargs)


def embed(server: OpenAIServer, texts: list[str]) -> np.ndarray:
    r = post(server, "/v1/embeddings", {"input": texts, "encoding_format": "float"})
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a - b).max()) < TOLERANCE


def resting_mb(pid: int) -> float:
    time.sleep(1.5)  # the engine hands freed memory back after 1 s idle
    return memory_mb("VmRSS", pid)


class PeakSampler:
    """The highest resident memory of a process while the `with` block runs: VmHWM after a reset where the
    kernel allows it, and samples of VmRSS every few milliseconds either way."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()

    def __enter__(self):
        self.reset = reset_peak(self.pid)
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def sample(self):
        while not self.done.wait(0.003):
            self.peak = max(self.peak, memory_mb("VmRSS", self.pid))

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(10)
        if self.reset:
            self.peak = max(self.peak, memory_mb("VmHWM", self.pid))


def wait_in_flight(server: OpenAIServer, n: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (health := server.health()[1])["requests_in_flight"] != n:
        assert time.monotonic() < deadline, f"never {n} requests in flight: {health}"
        time.sleep(0.05)
    return health


def request_head(path: str, length: int, key: str = KEY) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or `timeout` passes: then what came)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


# --- bodies that cost more than their bytes ---------------------------------------------------------------


@pytest.mark.parametrize("shape, first", [
    ("ints", "`input[1]` must be a string, got int"),
    ("empty lists", "`input[1]` must be a string, got list"),
    ("empty dicts", "`input[1]` must be a string, got dict"),
    ("nested lists", "`input[1]` must be a string, got list"),
    ("short strings", "`input` has more than 10000 texts"),
    ("documents, ints", "`documents[1]` must be a string, got int"),
    ("unknown fields", "unknown field `x`"),
])
def test_a_validation_bomb_is_refused_naming_its_first_wrong_item_within_the_stated_memory(server, shape, first):
    """Bodies of millions of small wrong items (2 MB of them once cost 2.5 GB): refused at their first items,
    the server's peak within BODY_MULTIPLE times the body over its resting memory; and a neighbour's request
    sent meanwhile gets exactly the vectors it gets alone."""
    path, body = bodies(BOMB_BYTES)[shape]
    alone = embed(server, NEIGHBOUR)
    pid = server.proc.pid
    rest = resting_mb(pid)
    with ThreadPoolExecutor(2) as pool, PeakSampler(pid) as peak:
        bomb = pool.submit(post, server, path, body)
        neighbour = pool.submit(embed, server, NEIGHBOUR)
        r = bomb.result(timeout=300)
        together = neighbour.result(timeout=300)
    assert r.status_code in (400, 422), r.text
    error = r.json()["error"]
    assert first in error["message"] and error["type"] == "invalid_request_error", error
    assert close(together, alone)
    allowed = rest + BODY_MULTIPLE * len(body) / 1e6 + SLACK_MB
    assert peak.peak <= allowed, f"{shape}: peak {peak.peak:.0f} MB over {allowed:.0f} (rest {rest:.0f} MB)"


def test_token_ids_keep_their_own_message_without_being_read(server):
    r = post(server, "/v1/embeddings", b'{"input": [' + b",".join([b"[101, 2023]"] * 200_000) + b"]}")
    assert r.status_code == 400 and r.json()["error"]["code"] == "token_ids_not_supported"


def refused_bodies(size: int) -> list[tuple[str, dict, str]]:
    """Multi-MB bodies refused at each stage: the shape check, pydantic, the route, the engine."""
    rng = random.Random(3)
    words = [rng.choice(SEED_WORDS) for _ in range(size // 8)]
    text = " ".join(words)[: size * 8 // 10]  # under E5_MAX_REQUEST_CHARS, in fewer than E5_MAX_TEXTS texts
    texts = [text[i : i + 1000] for i in range(0, len(text), 1000)]
    return [
        ("/v1/embeddings", {"input": ["a"] + [1] * (size // 2)}, "invalid_type"),
        ("/v1/embeddings", {"input": texts, "truncate": "yes"}, "bool_type"),
        ("/v1/embeddings", {"input": texts, "dimensions": 5}, "invalid_dimensions"),
        ("/v1/embeddings", {"input": texts + [" "]}, "empty_text"),
        ("/rerank", {"query": "q", "documents": texts, "top_n": 0}, "greater_than_equal"),
        ("/rerank", {"query": " ", "documents": texts}, "empty_text"),
    ]


def test_refused_bodies_are_freed_at_once_without_the_garbage_collector(server):
    """Six refused 4 MB bodies, one of each way of being refused: the server's memory comes back to rest
    (a refusal's body once stayed alive until the garbage collector happened to run: 0.5 -> 1.8 GB)."""
    pid = server.proc.pid
    embed(server, NEIGHBOUR)
    rest = resting_mb(pid)
    sizes = []
    for path, body, code in refused_bodies(BOMB_BYTES):
        content = json.dumps(body).encode()
        sizes.append(len(content) / 1e6)
        r = post(server, path, content)
        assert r.status_code in (400, 422) and r.json()["error"]["code"] == code, r.text
    after = resting_mb(pid)
    assert after <= rest + max(sizes) * BODY_MULTIPLE + SLACK_MB, f"resting {rest:.0f} MB, after {after:.0f} MB"


def test_no_refusal_leaves_a_reference_cycle_behind():
    """In-process, with the collector off: each way of refusing leaves no cycle holding its body (a traceback
    holding the frames that hold the body is one). gc.collect() finding nothing means nothing waited for it."""
    from e5.errors import InputError
    from e5.validation import Limits

    class Service:
        limits = Limits()
        embedder = type("Embedder", (), {"dimensions": 1024})

        def healthy(self):
            return True

        async def run(self, request):
            if request.texts == ["crash"]:
                raise RuntimeError("the engine failed")
            raise InputError("`texts[0]` is empty or whitespace-only", "empty_text")

    cases = [("/v1/embeddings", b'{"input": ["a", 1, 1]}'), ("/v1/embeddings", b'{"input": "a", "truncate": "yes"}'),
             ("/v1/embeddings", b'{"input": ["a"]}'), ("/v1/embeddings", b'{"input": ["crash"]}'),
             ("/rerank", b'{"query": "q", "documents": ["a"], "top_n": 0}'), ("/v1/embeddings", b"{bad"),
             ("/v1/embeddings", b'{"input": "a", "dimensions": 5}')]

    async def call(app, path: str, body: bytes) -> int:
        sent, messages = [], [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)  # the client stays: the disconnect never comes

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "path": path,
                 "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
                 "server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2), "state": {},
                 "headers": [(b"content-type", b"application/json")]}
        try:
            await app(scope, receive, send)
        except RuntimeError:  # Starlette answers 500 and raises on, for the server to log
            pass
        return sent[0]["status"]

    async def main():
        app = openai_api.create_app(openai_api.ApiSettings(), load=Service)
        async with app.router.lifespan_context(app):
            while app.state.e5.service is None:
                await asyncio.sleep(0.01)
            found = {}
            for path, body in cases:
                gc.collect()
                gc.disable()
                try:
                    status = await call(app, path, body)
                    found[body] = (status, gc.collect())
                finally:
                    gc.enable()
            return found

    found = asyncio.run(main())
    assert sorted(status for status, _ in found.values()) == [400, 400, 400, 422, 422, 422, 500]
    assert {body: cycles for body, (_, cycles) in found.items() if cycles} == {}


# --- clients that send slowly, or nothing -------------------------------------------------------------------


def test_slow_bodies_hold_no_place_and_are_answered_408_after_the_body_timeout(server):
    """More slow clients than places in flight (headers and 160 bytes of body, then nothing): others are
    served meanwhile, /health is not saturated, and each slow one gets a 408 and a closed connection."""
    alone = embed(server, NEIGHBOUR)
    socks = []
    try:
        for _ in range(4):  # E5_API_MAX_REQUESTS is 2
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(request_head("/v1/embeddings", 10_000) + b'{"input": ["' + b"x" * 148)
            socks.append(sock)
        time.sleep(0.5)
        health = server.health()
        assert health[0] == 200 and health[1]["requests_in_flight"] == 0 and health[1]["saturated"] is False
        assert close(embed(server, NEIGHBOUR), alone)
        for sock in socks:
            answer = read_until_closed(sock, timeout=BODY_TIMEOUT_S + 30)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b'"code":"request_timeout"' in answer and b"E5_API_BODY_TIMEOUT_S" in answer
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("sent", [b"", b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "half a head"])
def test_a_connection_without_a_whole_request_head_is_closed(server, sent):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(sent)
        start = time.monotonic()
        assert read_until_closed(sock, timeout=IDLE_TIMEOUT_S + 30) == b""
        assert time.monotonic() - start < IDLE_TIMEOUT_S + 30  # closed by the server, not by our timeout


def test_an_idle_keep_alive_connection_is_closed_after_its_answer(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(sock, timeout=IDLE_TIMEOUT_S + 30)
        assert answer.startswith(b"HTTP/1.1 200") and b'"status":"ready"' in answer


# --- places in flight ---------------------------------------------------------------------------------------


def test_health_shows_saturation_and_one_more_request_gets_a_429(server):
    """Two long requests (minutes of forwards) fill E5_API_MAX_REQUESTS=2; their clients then go away."""
    rng = random.Random(1)
    body = json.dumps({"input": [" ".join(rng.choice(SEED_WORDS) for _ in range(200)) for _ in range(2000)]}).encode()
    socks = []
    try:
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(request_head("/v1/embeddings", len(body)) + body)
            socks.append(sock)
        health = wait_in_flight(server, 2)
        assert (health["max_requests"], health["saturated"], health["status"]) == (2, True, "ready")
        assert server.health()[0] == 200  # saturated is not unhealthy: a readiness probe keeps the replica
        r = post(server, "/v1/embeddings", {"input": "one too many"})
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and "E5_API_MAX_REQUESTS" in r.text
    finally:
        for sock in socks:
            sock.close()
    assert wait_in_flight(server, 0)["saturated"] is False


# --- auth, the key, the rerank names ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
def test_the_bearer_scheme_is_accepted_in_any_case(server, scheme):
    r = post(server, "/v1/embeddings", {"input": "hello"}, headers={"authorization": f"{scheme} {KEY}"})
    assert r.status_code == 200, r.text
    wrong = post(server, "/v1/embeddings", {"input": "hello"}, headers={"authorization": f"{scheme} x{KEY}"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("key", ["clé-secrète", "two words", "tab\there"])
def test_a_key_that_cannot_travel_in_a_header_stops_startup_naming_the_variable(tmp_path, checkpoint_dir, key):
    with OpenAIServer(checkpoint_dir, env={"E5_API_KEY": key}, log_path=tmp_path / "server.log") as server:
        assert server.wait_for_exit(timeout=120) == 2
    log = server.log()
    assert "E5_API_KEY must be printable ASCII" in log and key not in log  # the key itself is not echoed


def test_rerank_errors_name_top_n_not_the_engines_top_k(server):
    r = post(server, "/rerank", {"query": "q", "documents": ["a", "b"], "top_n": 10_001})
    error = r.json()["error"]
    assert r.status_code == 400 and "`top_n` must be a whole number" in error["message"], error
    assert "top_k" not in error["message"] and error["param"] == "top_n"
