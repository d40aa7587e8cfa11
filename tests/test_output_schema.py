"""Every response the real server gives conforms to the Output schema it publishes (/openapi.json).

The schema is what `cog build` writes from predict.py's annotations (.cog/openapi_schema.json, served by coglet
as it is); coglet never checks an output against it, so this does: each encoding_format, without and with
documents, with and without top_k, and a texts_file job, validated with a JSON Schema validator.
"""

from __future__ import annotations

import base64
import copy

import jsonschema
import pytest

from testkit.cog_server import CogServer

TEXTS = ["how much protein should a female eat", "南瓜的家常做法"]
DOCUMENTS = ["46 grams a day for women", "清炒南瓜丝", "Kyoto is in Japan"]
FORMATS = ["float", "base64", "int8", "binary"]


@pytest.fixture(scope="module")
def server(checkpoint_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("output-schema") / "server.log"
    with CogServer(checkpoint_dir, log_path=log) as s:
        assert s.wait_until() == "READY", log.read_text()[-3000:]
        yield s


def json_schema(schema: dict) -> dict:
    """OpenAPI 3.0's `nullable: true` as JSON Schema says it: null is one more allowed type."""
    schema = copy.deepcopy(schema)

    def convert(node):
        if isinstance(node, dict):
            if node.pop("nullable", False):
                node["type"] = [node["type"], "null"]
            for value in node.values():
                convert(value)
        elif isinstance(node, list):
            for value in node:
                convert(value)

    convert(schema)
    return schema


@pytest.fixture(scope="module")
def validator(server):
    output = server.get("/openapi.json")["components"]["schemas"]["Output"]  # what clients read, from the server
    schema = json_schema(output)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def conforming(validator, server, inputs: dict) -> dict:
    status, body = server.predict(inputs)
    assert status == 200 and body["status"] == "succeeded", body
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(body["output"])]
    assert not errors, errors
    return body["output"]


def test_the_validator_catches_what_the_old_schema_let_through(validator):
    # A bare `list` was published as an array of objects; each of these is a response shape the schema refuses.
    good = {"model": "m", "dimensions": 2, "encoding_format": "float", "embeddings": [[0.5, 1]], "token_counts": [3],
            "truncated": [False], "usage": {"prompt_tokens": 3, "total_tokens": 3}}
    assert validator.is_valid(good)
    for key, bad in [("embeddings", [{"a": 1}]), ("embeddings", ["c3Ry"]), ("ranking", [[1, 0]]),
                     ("scores", [[{"index": 0}]]), ("usage", {"prompt_tokens": "3", "total_tokens": 3}),
                     ("ranking", [[{"index": 0}]]), ("embeddings_base64", [[0.5]])]:
        assert not validator.is_valid({**good, key: bad}), (key, bad)


@pytest.mark.parametrize("encoding_format", FORMATS)
@pytest.mark.parametrize("documents, top_k", [(None, None), (DOCUMENTS, None), (DOCUMENTS, 2)])
def test_every_response_conforms_to_the_published_output_schema(validator, server, encoding_format, documents, top_k):
    inputs = {"texts": TEXTS, "encoding_format": encoding_format}
    if documents:
        inputs["documents"] = documents
    if top_k:
        inputs["top_k"] = top_k
    out = conforming(validator, server, inputs)
    # and each field holds what its schema says, not merely something the schema allows
    vectors = out["embeddings_base64"] if encoding_format == "base64" else out["embeddings"]
    assert len(vectors) == len(TEXTS)
    assert (out["ranking"] is None) == (documents is None)
    assert (out["scores"] is None) == (documents is None or top_k is not None)
    if documents:
        assert [len(row) for row in out["ranking"]] == [top_k or len(DOCUMENTS)] * len(TEXTS)


def test_a_texts_file_job_conforms_to_the_published_output_schema(validator, server):
    upload = "data:text/plain;base64," + base64.b64encode("\n".join(TEXTS + DOCUMENTS).encode()).decode()
    out = conforming(validator, server, {"texts_file": upload, "output_file_format": "jsonl"})
    assert out["embeddings"] == [] and out["embeddings_file"].startswith("data:")
    assert len(out["token_counts"]) == len(TEXTS + DOCUMENTS)


@pytest.mark.parametrize("long_texts", ["mean", "windows"])
def test_long_texts_responses_conform_to_the_published_output_schema(validator, server, long_texts):
    """Through the real server, with the schema the image carries: the input is accepted and the answer,
    `windows` included, is what the schema says."""
    long = " ".join(f"Chapter {i}: the ledger kept {i * 7} pages." for i in range(200))
    out = conforming(validator, server, {"texts": [TEXTS[0], long], "long_texts": long_texts})
    assert out["token_counts"][1] > 512 and out["truncated"] == [False, False]
    if long_texts == "windows":
        assert len(out["embeddings"]) == len(out["windows"]) > 2 and out["windows"][-1]["end"] == len(long)
    else:
        assert len(out["embeddings"]) == 2 and out["windows"] is None
