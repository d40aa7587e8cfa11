"""The OpenAI-compatible face (openai_api.py) as self-hosters reach it: the real server process over HTTP,
driven by the real clients (the `openai` SDK, LangChain's OpenAIEmbeddings, schemathesis), its vectors
checked against predict()'s for the same options."""

from __future__ import annotations

import base64
import json
import random
import socket
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

import openai_api
from e5.budget import MemoryBudget
from e5.engine import Embedder
from e5.errors import InputError, WeightsError
from e5.memory_model import MB
from e5.model import MODEL_ID
from e5.profiles import LARGE_INSTRUCT
from testkit.openai_server import OpenAIServer, start_server
from testkit.synthetic_checkpoint import SEED_WORDS

TEXTS = ["how much protein should a female eat", "南瓜的家常做法", "der Gipfel des Berges"]
DOCS = ["As a general guideline, women need 46 grams of protein a day", "清炒南瓜丝 原料:嫩南瓜半个", "summit chart"]
KEY = "sk-test-key"
TOLERANCE = 1e-5  # a text's vector depends a little on the forward it shares (padding, row packing)
LIMITS = {"E5_API_MAX_BODY_BYTES": "20000", "E5_API_MAX_REQUESTS": "2", "E5_MAX_TEXTS": "5"}


def start(checkpoint_dir, tmp_path_factory, name: str, env: dict | None = None) -> OpenAIServer:
    return start_server(checkpoint_dir, tmp_path_factory.mktemp(name) / "server.log", env)


@pytest.fixture(scope="module")
def server(checkpoint_dir, tmp_path_factory):
    server = start(checkpoint_dir, tmp_path_factory, "open")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def locked(checkpoint_dir, tmp_path_factory):
    """A server with a key and small limits, so that each limit is cheap to reach."""
    server = start(checkpoint_dir, tmp_path_factory, "locked", {"E5_API_KEY": KEY, **LIMITS})
    yield server
    server.stop()


def sdk(server: OpenAIServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def client(server):
    return sdk(server)


def vectors(response) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def predicted(embed, **inputs) -> np.ndarray:
    return np.asarray(embed(**inputs).embeddings, dtype=np.float32)


def close(a, b) -> bool:
    return a.shape == b.shape and float(np.abs(a - b).max()) < TOLERANCE


# --- the openai SDK -----------------------------------------------------------------------------------


def test_sdk_float_vectors_equal_predicts_and_only_input_means_a_web_search_query(client, embed):
    response = client.embeddings.create(input=TEXTS, model="text-embedding-3-small", encoding_format="float")
    assert close(vectors(response), predicted(embed, texts=TEXTS))  # predict()'s defaults: query, web_search
    assert response.model == MODEL_ID and response.object == "list"
    out = embed(texts=TEXTS)
    assert response.usage.prompt_tokens == response.usage.total_tokens == out.usage["total_tokens"]


def test_sdk_default_is_base64_decoded_by_the_sdk_and_explicit_base64_is_exact_float32(client, embed):
    floats = vectors(client.embeddings.create(input=TEXTS, model="m", encoding_format="float"))
    by_default = client.embeddings.create(input=TEXTS, model="m")  # the SDK asks for base64 and decodes it
    assert close(vectors(by_default), floats)
    raw = client.embeddings.create(input=TEXTS, model="m", encoding_format="base64")
    assert all(isinstance(d.embedding, str) for d in raw.data)
    decoded = np.stack([np.frombuffer(base64.b64decode(d.embedding), "<f4") for d in raw.data])
    assert decoded.shape == (3, 1024) and close(decoded, predicted(embed, texts=TEXTS))


def test_one_string_is_one_text(client, embed):
    response = client.embeddings.create(input=TEXTS[1], model="m", encoding_format="float")
    assert close(vectors(response), predicted(embed, texts=[TEXTS[1]]))


@pytest.mark.parametrize("extra, options", [
    ({"input_type": "document"}, {"input_type": "document"}),
    ({"task": "sts"}, {"task": "sts"}),
    ({"task": "Find the recipe for this dish"}, {"task": "Find the recipe for this dish"}),
    ({"normalize": False}, {"normalize": False}),
])
def test_extra_body_options_give_predicts_vectors_for_the_same_options(client, embed, extra, options):
    response = client.embeddings.create(input=TEXTS, model="m", encoding_format="float", extra_body=extra)
    assert close(vectors(response), predicted(embed, texts=TEXTS, **options))
    assert not close(vectors(response), predicted(embed, texts=TEXTS))  # the option did something


@pytest.mark.parametrize("encoding", ["int8", "binary"])
def test_compact_encodings_through_extra_body_equal_predicts(client, embed, encoding):
    response = client.embeddings.create(input=TEXTS, model="m", extra_body={"encoding_format": encoding})
    got = np.array([d.embedding for d in response.data])
    want = np.asarray(embed(texts=TEXTS, encoding_format=encoding).embeddings)
    assert got.shape == want.shape == (3, 1024 if encoding == "int8" else 128)
    # int8 rounds 127x: a float that differs in the last bits may round the other way
    assert np.abs(got - want).max() <= 1 if encoding == "int8" else (got != want).mean() < 0.01


def test_truncate_false_names_the_input_and_index(client):
    long = " ".join(["protein"] * 900)
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(input=["ok", long], model="m", extra_body={"truncate": False})
    body = err.value.body
    assert "`input[1]` has" in body["message"] and "the limit is 512" in body["message"]
    assert (body["param"], body["code"]) == ("input", "too_many_tokens")
    ok = client.embeddings.create(input=["ok", long], model="m", extra_body={"truncate": True})
    assert len(ok.data) == 2


@pytest.mark.parametrize("kwargs, status, message", [
    (dict(input=["ok", " "]), openai.BadRequestError, "`input[1]` is empty or whitespace-only"),
    (dict(input=[]), openai.BadRequestError, "`input` is empty"),
    (dict(input=[[101, 2023, 102]]), openai.BadRequestError, "check_embedding_ctx_length=False"),
    (dict(input=[101, 2023]), openai.BadRequestError, "token ids"),
    (dict(input="ok", dimensions=256), openai.BadRequestError, "not Matryoshka-trained"),
    (dict(input="ok", extra_body={"task": "  "}), openai.BadRequestError, "`task` is empty"),
    (dict(input="ok", extra_body={"input_type": "passage"}), openai.UnprocessableEntityError, "`input_type`"),
    (dict(input="ok", extra_body={"truncate": "yes"}), openai.UnprocessableEntityError, "`truncate`"),
    (dict(input="ok", extra_body={"input_typ": "document"}), openai.UnprocessableEntityError, "unknown field `input_typ`"),
    (dict(input=["ok", 3]), openai.UnprocessableEntityError, "`input[1]` must be a string, got int"),
    (dict(input={"a": 1}), openai.UnprocessableEntityError, "`input` must be a string or a list of strings"),
])
def test_refusals_surface_as_the_sdks_exception_types_in_openais_error_shape(client, kwargs, status, message):
    with pytest.raises(status) as err:
        client.embeddings.create(model="m", **kwargs)
    body = err.value.body  # the SDK hands over the `error` object
    assert set(body) == {"message", "type", "param", "code"} and body["type"] == "invalid_request_error"
    assert message in body["message"]


def test_dimensions_1024_is_accepted_as_the_models_width(client, embed):
    response = client.embeddings.create(input=TEXTS, model="m", dimensions=1024, encoding_format="float")
    assert close(vectors(response), predicted(embed, texts=TEXTS))


def test_malformed_json_is_a_400_in_openais_shape(server):
    r = httpx.post(server.url + "/v1/embeddings", content=b'{"input": "a"', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_models_lists_the_one_model(client):
    assert [m.id for m in client.models.list()] == [MODEL_ID]
    assert client.models.retrieve(MODEL_ID).id == MODEL_ID
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("text-embedding-3-small")


# --- LangChain ----------------------------------------------------------------------------------------


def test_langchain_embeds_documents_and_queries_with_check_embedding_ctx_length_off(server, embed):
    from langchain_openai import OpenAIEmbeddings

    lc = OpenAIEmbeddings(base_url=server.url + "/v1", api_key="unused", model=MODEL_ID,
                          check_embedding_ctx_length=False, max_retries=0)
    assert close(np.array(lc.embed_query(TEXTS[0]), np.float32), predicted(embed, texts=TEXTS[:1])[0])
    # Documents are better embedded raw: LangChain passes extra_body through to the SDK.
    docs = lc.embed_documents(DOCS, extra_body={"input_type": "document"})
    assert close(np.array(docs, np.float32), predicted(embed, texts=DOCS, input_type="document"))
    as_docs = OpenAIEmbeddings(base_url=server.url + "/v1", api_key="unused", model=MODEL_ID,
                               check_embedding_ctx_length=False, model_kwargs={"extra_body": {"input_type": "document"}})
    assert close(np.array(as_docs.embed_documents(DOCS), np.float32), predicted(embed, texts=DOCS, input_type="document"))


def test_langchain_by_default_sends_token_ids_and_gets_a_400_saying_what_to_set(server, monkeypatch):
    """By default LangChain tokenizes with tiktoken and sends the ids. Its cl100k_base table is downloaded on
    first use, which CI cannot do, so a byte-level encoding stands in for it: the request LangChain sends has
    the same shape (a list of token-id lists), which is what the server refuses."""
    import tiktoken
    import tiktoken.registry
    from langchain_openai import OpenAIEmbeddings

    stand_in = tiktoken.Encoding("cl100k_base", pat_str=r"\S+|\s+", mergeable_ranks={bytes([i]): i for i in range(256)},
                                 special_tokens={})
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "cl100k_base", stand_in)
    lc = OpenAIEmbeddings(base_url=server.url + "/v1", api_key="unused", model=MODEL_ID, max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        lc.embed_documents(DOCS)
    assert err.value.body["code"] == "token_ids_not_supported"
    assert "check_embedding_ctx_length=False" in err.value.body["message"]


# --- rerank -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank"])
def test_rerank_orders_documents_by_predicts_cosine_best_first(server, embed, path):
    out = embed(texts=[TEXTS[0]], documents=DOCS)
    r = httpx.post(server.url + path, json={"query": TEXTS[0], "documents": DOCS, "model": "any"}, timeout=300)
    assert r.status_code == 200, r.text
    body = r.json()
    indices = [x["index"] for x in body["results"]]
    scores = [x["relevance_score"] for x in body["results"]]
    assert indices == [e["index"] for e in out.ranking[0]] and sorted(indices) == [0, 1, 2]
    assert np.allclose(scores, [e["score"] for e in out.ranking[0]], atol=TOLERANCE)
    assert scores == sorted(scores, reverse=True) and "document" not in body["results"][0]
    assert body["usage"]["total_tokens"] == out.usage["total_tokens"] and body["model"] == MODEL_ID


def test_rerank_top_n_and_return_documents(server):
    r = httpx.post(server.url + "/rerank", json={"query": TEXTS[0], "documents": DOCS, "top_n": 2,
                                                 "return_documents": True}, timeout=300)
    results = r.json()["results"]
    assert len(results) == 2 and all(x["document"] == {"text": DOCS[x["index"]]} for x in results)


@pytest.mark.parametrize("body, status, message", [
    ({"query": " ", "documents": DOCS}, 400, "`query` is empty"),
    ({"query": "q", "documents": ["a", ""]}, 400, "`documents[1]` is empty"),
    ({"query": "q", "documents": []}, 400, "`documents` is empty"),
    ({"query": "q", "documents": DOCS, "top_n": 0}, 422, "`top_n`"),
    ({"documents": DOCS}, 422, "`query`"),
])
def test_rerank_refusals_name_the_input(server, body, status, message):
    r = httpx.post(server.url + "/rerank", json=body, timeout=300)
    assert r.status_code == status and message in r.json()["error"]["message"], r.text


# --- auth, limits, health -----------------------------------------------------------------------------


def test_without_a_key_the_api_is_open_and_the_log_says_so(server):
    assert "E5_API_KEY is not set" in server.log()


def test_with_a_key_every_call_but_health_needs_it(locked):
    with pytest.raises(openai.AuthenticationError) as err:
        sdk(locked, "wrong").embeddings.create(input="ok", model="m")
    assert err.value.body["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        sdk(locked, "wrong").models.list()
    assert httpx.post(locked.url + "/rerank", json={"query": "q", "documents": ["d"]}).status_code == 401
    assert len(sdk(locked, KEY).embeddings.create(input=["ok"], model="m").data) == 1
    assert httpx.get(locked.url + "/health").json()["status"] == "ready"
    assert "bearer-token auth on" in locked.log()


def test_a_body_over_the_limit_is_a_413_whether_or_not_it_says_its_length(locked):
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    body = json.dumps({"input": ["protein " * 1000] * 3}).encode()
    assert len(body) > 20_000
    with pytest.raises(openai.APIStatusError) as err:
        sdk(locked, KEY).embeddings.create(input=["protein " * 1000] * 3, model="m")
    assert err.value.status_code == 413 and err.value.body["code"] == "request_too_large"
    chunked = httpx.post(locked.url + "/v1/embeddings", content=iter([body[:10_000], body[10_000:]]), headers=headers)
    assert chunked.status_code == 413 and "E5_API_MAX_BODY_BYTES" in chunked.json()["error"]["message"]


def test_the_request_limits_of_the_cog_face_apply(locked):
    with pytest.raises(openai.BadRequestError) as err:
        sdk(locked, KEY).embeddings.create(input=["a"] * 6, model="m")
    assert "`input` has more than 5 texts; the limit is 5" in err.value.body["message"]
    # One query and five documents: the walk of the body lets them by, the engine counts them together.
    r = httpx.post(locked.url + "/rerank", json={"query": "q", "documents": ["d"] * 5},
                   headers={"authorization": f"Bearer {KEY}"}, timeout=300)
    assert r.status_code == 400 and "`query` and `documents` have 6 texts" in r.json()["error"]["message"], r.text


def held_request(server: OpenAIServer, body: bytes, key: str | None = None) -> socket.socket:
    """A request whose headers are sent and whose body is not: the server counts it in flight."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    sock.sendall(f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
                 f"Content-Length: {len(body)}\r\n\r\n".encode())
    return sock


def wait_in_flight(server: OpenAIServer, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while server.health()[1]["requests_in_flight"] != n:
        assert time.monotonic() < deadline, f"never {n} requests in flight: {server.health()}"
        time.sleep(0.05)


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_requests_whose_bodies_have_not_come_hold_no_place_and_still_finish(locked):
    """A place in flight is taken once the body is here: three requests stopped after their headers leave
    E5_API_MAX_REQUESTS=2 free for others (the 429 itself: tests/test_openai_security.py)."""
    body = json.dumps({"input": ["held"]}).encode()
    socks = [held_request(locked, body, KEY) for _ in range(3)]
    try:
        time.sleep(0.5)
        assert locked.health()[1]["requests_in_flight"] == 0 and locked.health()[1]["saturated"] is False
        assert len(sdk(locked, KEY).embeddings.create(input="not held up", model="m").data) == 1
        for sock in socks:
            sock.sendall(body)
            assert read_response(sock).startswith(b"HTTP/1.1 200")
    finally:
        for sock in socks:
            sock.close()
    wait_in_flight(locked, 0)


def test_a_missing_weights_folder_stops_startup_with_the_engines_message(tmp_path):
    missing = tmp_path / "no-weights"
    with pytest.raises(WeightsError) as err:
        Embedder.load(missing, device="cpu")
    with OpenAIServer(missing, log_path=tmp_path / "server.log") as server:
        assert server.wait_for_exit() == 1
    assert str(err.value) in server.log()


def test_a_bad_setting_stops_startup_naming_the_variable(tmp_path, checkpoint_dir):
    with OpenAIServer(checkpoint_dir, env={"E5_API_MAX_REQUESTS": "many"}, log_path=tmp_path / "server.log") as server:
        assert server.wait_for_exit() == 2
    assert "E5_API_MAX_REQUESTS must be a whole number" in server.log()


def test_health_says_loading_until_the_model_is_ready_then_ready():
    """In-process, with a load that waits for the test: `loading` (503) is seen for certain, then `ready`."""
    from fastapi.testclient import TestClient

    release = threading.Event()

    class Ready:
        embedder = types.SimpleNamespace(model_profile=LARGE_INSTRUCT)
        budget = MemoryBudget(2_000 * MB, source="E5_MEMORY_BUDGET_MB")

        def healthy(self):
            return True

    def load():
        release.wait(60)
        return Ready()

    app = openai_api.create_app(openai_api.ApiSettings(), load=load)
    with TestClient(app) as http:
        r = http.get("/health")
        assert (r.status_code, r.json()["status"], r.json()["model"]) == (503, "loading", None)
        assert http.get("/v1/models").json()["error"]["code"] == "model_loading"
        refused = http.post("/v1/embeddings", json={"input": "early"})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_loading"
        release.set()
        deadline = time.monotonic() + 60
        while http.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert http.get("/health").json()["status"] == "ready"
        assert http.get("/health").json()["model"] == LARGE_INSTRUCT.name
        assert http.get("/health").json()["memory"] == {"budget_mb": 2000, "in_use_mb": 0.0, "peak_mb": 0.0,
                                                         "waiting": 0, "refused_busy": 0}


# --- concurrency and disconnects ----------------------------------------------------------------------


def random_texts(rng: random.Random, n: int, words: int) -> list[str]:
    return [" ".join(rng.choice(SEED_WORDS) for _ in range(rng.randint(1, words))) for _ in range(n)]


def test_concurrent_requests_get_the_vectors_their_texts_get_alone(server, client):
    rng = random.Random(7)
    requests = [random_texts(rng, rng.randint(1, 4), 40) for _ in range(16)]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda texts: vectors(client.embeddings.create(input=texts, model="m", encoding_format="float")), requests))
    for texts, got in zip(requests, together):
        alone = np.stack([vectors(client.embeddings.create(input=t, model="m", encoding_format="float"))[0] for t in texts])
        assert close(got, alone)


def test_a_client_that_goes_away_cancels_its_work_and_nobody_elses(server, client):
    """A request of 2,000 long texts (minutes of forwards on this model) is dropped mid-request while a small
    one is in flight beside it: the large one's work stops, the small one gets its right vectors."""
    big = random_texts(random.Random(1), 2000, 200)
    body = json.dumps({"input": big}).encode()
    sock = held_request(server, body)
    sock.sendall(body)
    try:
        wait_in_flight(server, 1)
        with ThreadPoolExecutor(1) as pool:
            small = pool.submit(lambda: client.embeddings.create(input=TEXTS, model="m", encoding_format="float"))
            wait_in_flight(server, 2)
            sock.close()
            got = vectors(small.result(timeout=300))
    finally:
        sock.close()
    assert close(got, vectors(client.embeddings.create(input=TEXTS, model="m", encoding_format="float")))
    wait_in_flight(server, 0)
    deadline = time.monotonic() + 60
    while "its request was cancelled" not in server.log():
        assert time.monotonic() < deadline, "the server never saw the client go"
        time.sleep(0.1)
    assert "e5: texts 2000," not in server.log()  # the large request never finished its work
    assert server.health()[1]["status"] == "ready"


# --- small pure pieces --------------------------------------------------------------------------------


def test_the_services_names_become_this_faces_names():
    assert openai_api.renamed("`texts[3]` is empty", {"texts": "input"}) == "`input[3]` is empty"
    assert openai_api.renamed("`texts[0]` is empty", {"texts": "query"}) == "`query` is empty"
    assert openai_api.renamed("use `texts_file`", {"texts": "input"}) == "use `texts_file`"
    err = openai_api.input_error(InputError("`texts` and `documents` have 9 texts", "too_many_texts"), {"texts": "query"})
    assert (err.status, err.param, err.message) == (400, "query", "`query` and `documents` have 9 texts")


def test_the_load_comparison_checks_every_answer_of_both_servers(checkpoint_dir, tmp_path):
    import argparse

    from benchmarks import openai_loadtest

    args = argparse.Namespace(levels="1,2", per_level=4, repeat=2, slots=8, time_limit=120, seed=5)
    report = openai_loadtest.run_compare(args, checkpoint_dir, tmp_path)
    check = report["check"]
    assert (check["ok"], check["failures"], check["wrong"], check["lost"]) == (32, 0, 0, 0), check["examples"]
    for level in ("cog", "openai"):
        assert all(report[level][c]["requests"] == 8 for c in (1, 2))
    pairs = report["openai_vs_cog_requests_per_s"][2]["repeats"]
    assert len(pairs) == 2 and all(r > 0 for r in pairs)
    assert "e5: texts 1," in (tmp_path / "openai.log").read_text()  # the OpenAI server did the work it was sent


def test_the_local_start_script_runs_the_module_with_host_and_port():
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "serve_openai.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)  # it parses
    last = script.read_text().strip().splitlines()[-1]
    assert last.startswith("exec .venv-serve/bin/python -m openai_api --host") and "--port" in last


def test_api_settings_from_the_environment():
    from e5.startup import ApiSettings

    assert ApiSettings.from_env({}) == ApiSettings(api_key=None, max_body_bytes=32_000_000, max_requests=32)
    assert ApiSettings.from_env({"E5_API_KEY": "  "}).api_key is None  # blank is unset, not an empty key
    given = ApiSettings.from_env({"E5_API_KEY": "k", "E5_API_MAX_BODY_BYTES": "1000", "E5_API_MAX_REQUESTS": "4"})
    assert (given.api_key, given.max_body_bytes, given.max_requests) == ("k", 1000, 4)
    with pytest.raises(ValueError, match="E5_API_MAX_BODY_BYTES must be at least 1"):
        ApiSettings.from_env({"E5_API_MAX_BODY_BYTES": "0"})


# --- schemathesis over the app's own OpenAPI document -------------------------------------------------


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_route_conforms_to_its_own_openapi_document_and_never_answers_5xx(server, mode):
    """Bounded and seeded: 25 generated requests per route and mode, every built-in check but one: no 5xx,
    documented status codes, content types and bodies, schema-breaking requests refused. Left out: "a
    schema-valid request is accepted", because the schema says types and choices only; what it cannot say
    (blank texts, limits, token counts) is e5's validation, answered 400 with the input named, as tested above."""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # embeddings, rerank, models and one model, each with and without /v1; TEI's /embed, /, /tokenize and /info;
    # Cohere's /v2/rerank; /health and /metrics
    assert len(operations) == 15

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
            continue  # only bodies can be broken: a GET here has no parameter, or a free-form path

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(timeout=300, excluded_checks=[schemathesis.checks.positive_data_acceptance])

        check()
