"""The real Cog server (coglet) on 127.0.0.1 with the generated checkpoint, as a client sees it."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cog_server import CogServer
from e5.encodings import decode_base64


@pytest.fixture(scope="module")
def server(checkpoint_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with CogServer(checkpoint_dir, concurrency=8, log_path=log) as s:
        assert s.wait_until() == "READY", log.read_text()[-3000:]
        s.log = log
        yield s


def test_success_returns_the_same_vectors_as_a_direct_call(server, embed):
    status, body = server.predict({"texts": ["how much protein should a female eat", "南瓜的家常做法"]})
    assert status == 200 and body["status"] == "succeeded", body
    out = body["output"]
    assert out["dimensions"] == 1024 and len(out["embeddings"]) == 2
    direct = embed(texts=["how much protein should a female eat", "南瓜的家常做法"])
    assert np.abs(np.array(out["embeddings"]) - np.array(direct.embeddings)).max() < 1e-5
    assert out["token_counts"] == direct.token_counts and out["truncated"] == [False, False]
    assert body["metrics"]["texts"] == 2 and body["metrics"]["tokens"] == sum(direct.token_counts)


@pytest.mark.parametrize("encoding_format", ["float", "base64", "int8", "binary"])
def test_every_encoding_and_the_ranking_arrive_as_the_direct_call_makes_them(server, embed, encoding_format):
    inputs = {"texts": ["how much protein should a female eat", "南瓜的家常做法"], "encoding_format": encoding_format,
              "documents": ["46 grams a day for women", "清炒南瓜丝", "Kyoto is in Japan"], "top_k": 2}
    status, body = server.predict(inputs)
    assert status == 200 and body["status"] == "succeeded", body
    out = body["output"]
    direct = embed(**inputs)

    def as_json(value):  # what the direct call's arrays and lists become in JSON
        return json.loads(json.dumps(np.asarray(value).tolist() if isinstance(value, np.ndarray) else value))

    assert out["ranking"] == as_json(direct.ranking) and len(out["ranking"][0]) == 2
    assert np.abs(np.array(out["scores"]) - np.array(direct.scores)).max() < 1e-5
    for key in ("embeddings", "document_embeddings"):
        got, want = out[key], as_json(getattr(direct, key))
        if encoding_format == "base64":
            got, want = ([decode_base64(s) for s in v] for v in (got, want))
        got, want = np.array(got), np.array(want)
        assert got.shape == want.shape
        if encoding_format == "int8":  # a component within float noise of a rounding boundary may differ by 1
            assert np.abs(got.astype(int) - want).max() <= 1
        elif encoding_format == "binary":  # likewise a sign within float noise of 0
            assert (np.unpackbits(got.astype(np.uint8)) == np.unpackbits(want.astype(np.uint8))).mean() > 0.99
        else:
            assert np.abs(got - want).max() < 1e-5


def test_failure_names_the_input_and_the_server_stays_ready(server):
    status, body = server.predict({"texts": ["fine", "   "]})
    assert status == 200 and body["status"] == "failed"
    assert "`texts[1]` is empty or whitespace-only" in body["error"]
    assert server.status() == "READY"
    status, body = server.predict({"texts": ["fine"]})
    assert body["status"] == "succeeded"


@pytest.mark.parametrize(
    "inputs, fragment",
    [
        ({}, "`texts` is required"),
        ({"texts": [1, 2]}, "`texts[0]` must be a string, got int"),
        ({"texts": ["ok", None]}, "`texts[1]` must be a string, got null"),
        ({"texts": [["nested"]]}, "`texts[0]` must be a string, got list"),
        ({"texts": {"a": "b"}}, "`texts` must be a list of strings, got dict"),
        ({"texts": ["ok"], "input_type": "passage"}, "`input_type` must be one of query, document"),
    ],
)
def test_non_string_json_gets_a_clear_error(server, inputs, fragment):
    status, body = server.predict(inputs)
    assert body["status"] == "failed" and fragment in body["error"], body


def test_a_bare_string_is_one_text(server):
    status, body = server.predict({"texts": "hello world"})
    assert body["status"] == "succeeded" and len(body["output"]["embeddings"]) == 1


def test_malformed_json_is_a_400(server):
    status, _ = server.post("/predictions", b"{not json")
    assert status == 400
    assert server.status() == "READY"


def test_concurrent_requests_are_merged_and_each_correct(server, embed):
    texts = [f"query {i} about protein and pumpkins" for i in range(16)]
    want = {t: np.array(embed(texts=[t]).embeddings[0]) for t in texts}
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda t: server.predict({"texts": [t]}), texts))
    merged = 0
    for t, (status, body) in zip(texts, results):
        if status == 409:  # every slot busy: an answer, not a loss
            continue
        assert body["status"] == "succeeded", body
        assert np.abs(np.array(body["output"]["embeddings"][0]) - want[t]).max() < 1e-5
        merged += body["metrics"]["batch_requests"] > 1
    assert merged > 0


def test_cancel_stops_a_running_prediction_and_the_server_carries_on(server, embed):
    import threading
    import time

    long_request = {"texts": ["the protein female eat " * 120] * 300, "input_type": "document"}
    answer = {}

    def run():
        answer["status"], answer["body"] = server.post(
            "/predictions/cancel-me", json.dumps({"id": "cancel-me", "input": long_request}).encode(), method="PUT")

    neighbour = {}

    def run_neighbour():
        neighbour["status"], neighbour["body"] = server.predict({"texts": ["a batch-mate of the cancelled one"]})

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(1.0)
    other = threading.Thread(target=run_neighbour)  # queued behind the long request
    other.start()
    time.sleep(0.5)
    status, _ = server.post("/predictions/cancel-me/cancel", b"")
    assert status == 200
    thread.join(timeout=60)
    other.join(timeout=60)
    assert not thread.is_alive() and not other.is_alive()
    assert answer["body"]["status"] == "canceled", answer
    assert neighbour["body"]["status"] == "succeeded", neighbour
    want_neighbour = embed(texts=["a batch-mate of the cancelled one"]).embeddings
    assert np.abs(np.array(neighbour["body"]["output"]["embeddings"]) - np.array(want_neighbour)).max() < 1e-5
    deadline = time.monotonic() + 30
    while server.status() != "READY" and time.monotonic() < deadline:
        time.sleep(0.1)
    status, body = server.predict({"texts": ["after the cancel"]})
    assert body["status"] == "succeeded"
    want = embed(texts=["after the cancel"]).embeddings
    assert np.abs(np.array(body["output"]["embeddings"]) - np.array(want)).max() < 1e-5


def test_logs_never_contain_the_texts(server):
    secret = "my private diagnosis zebra-42"
    status, body = server.predict({"texts": [secret]})
    assert body["status"] == "succeeded"
    assert secret not in body.get("logs", "")
    assert secret not in server.log.read_text(errors="replace")


def test_setup_failure_is_reported_with_the_fix(tmp_path):
    with CogServer(tmp_path / "no-weights", log_path=tmp_path / "log") as s:
        assert s.wait_until() == "SETUP_FAILED"
    log = (tmp_path / "log").read_text(errors="replace")
    assert "does not exist; fill it with `python scripts/download_weights.py`" in log
