"""schemathesis (a property-based API tester) against the real server as the image runs it, schema in place.

It reads the schema the server serves at /openapi.json (the committed .cog/openapi_schema.json; a test checks
the two are the same), generates requests from it, valid and invalid, and checks each answer against the
schema: no 5xx, every status and body the schema documents, every valid input accepted, every invalid one
refused. On top of its checks, one of ours: a schema-valid request is either embedded or refused by the
predictor with a named error (`InputError: ...` naming the input).

Bounded and repeatable: a fixed number of examples per operation, derandomized (the same cases every run).
Where coglet departs from its own schema, exactly that check is left out for exactly those cases
(`departures`), each with the behaviour named.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from testkit.cog_server import SCHEMA, CogServer

EXAMPLES = 60  # hypothesis's max_examples for each operation's generated cases
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # RFC 3986: a URI starts with its scheme
NAMED_ERROR = re.compile(r"InputError: .*?`(\w+)(\[\d+\])?`")
OUTCOMES: Counter = Counter()  # (path, HTTP status, prediction status) over the generated cases
INPUTS = json.loads(SCHEMA.read_text())["components"]["schemas"]["Input"]["properties"]

# A Path input is `format: uri`; coglet downloads any URL it is given. Generated URLs would send the server to
# made-up hosts, so texts_file gets what a client uploads: a small .txt file as a data URL (perhaps empty).
LINES = ["how much protein should a female eat", "南瓜的家常做法", "Kyoto is in Japan", "   ", ""]
schemathesis.openapi.format("uri", st.lists(st.sampled_from(LINES), max_size=3).map(
    lambda lines: "data:text/plain;base64," + base64.b64encode("\n".join(lines).encode()).decode()))


@pytest.fixture(scope="module")
def server(checkpoint_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("schemathesis") / "server.log"
    with CogServer(checkpoint_dir, log_path=log) as s:
        assert s.wait_until() == "READY", log.read_text()[-3000:]
        s.log = log
        yield s


# The schema the image carries, loaded when the tests are collected (schemathesis's lazy from_fixture loader does
# not run under pytest 9); the server serves this same file, which `test_the_server_serves_this_schema` checks.
schema = schemathesis.openapi.from_path(SCHEMA)


def test_the_server_serves_this_schema(server):
    assert server.get("/openapi.json") == json.loads(SCHEMA.read_text())


def departures(case) -> list:
    """The checks this case would fail only because coglet departs from its own schema."""
    if case.path == "/predictions/{prediction_id}/cancel":
        # coglet answers 404 to a cancel for an id it does not know; the schema lists only 200 and 422.
        return [status_code_conformance]
    if case.path != "/predictions":
        return []
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("id", ""), (str, type(None))) \
            or not isinstance(body.get("input", {}), (dict, type(None))):
        # A body coglet cannot read as a prediction request (not an object, or `id` not a string, or `input` not an
        # object) is refused by its JSON reader before any schema check: 400 for malformed JSON, else 422 with
        # a plain-text message, neither of them the documented HTTPValidationError JSON.
        return [status_code_conformance, content_type_conformance, response_schema_conformance]
    inputs = body.get("input")
    if ("input" in body and inputs is None) or ("id" in body and body["id"] is None):
        # coglet takes `"input": null` as no inputs (the predictor then asks for texts) and `"id": null` as no id;
        # the schema allows neither null.
        return [negative_data_rejection]
    excluded = []
    if isinstance(inputs, dict) and any(value is None for value in inputs.values()):
        # coglet answers 422 to null for an Optional input, which the schema marks `nullable: true`.
        excluded.append(positive_data_acceptance)
    if isinstance(inputs, dict) and isinstance(inputs.get("texts_file"), str) and not URI.match(inputs["texts_file"]):
        # coglet does not check `format: uri` on a Path input (to JSON Schema a format is a note unless the validator
        # is told to assert it), so a texts_file that is no URI reaches the predictor, which refuses it by name.
        excluded.append(negative_data_rejection)
    return excluded


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_the_server_keeps_to_its_schema(case, server):
    response = case.call_and_validate(base_url=server.url, excluded_checks=departures(case))
    assert response.status_code < 500
    outcome = response.json().get("status") if response.status_code == 200 and case.path == "/predictions" else None
    OUTCOMES[(case.path, response.status_code, outcome)] += 1
    if case.path == "/predictions" and response.status_code == 200:
        body = response.json()
        if body["status"] != "succeeded":  # refused by the predictor: the error names an input
            named = NAMED_ERROR.search(body.get("error", ""))
            assert body["status"] == "failed" and named and named.group(1) in INPUTS, body


# Requests that embed, for schemathesis's checks on full responses: generated inputs rarely pass every rule the
# schema cannot state (texts or texts_file, not both; no empty list), so these are given, one per output shape.
VALID = [{"texts": ["how much protein should a female eat", "南瓜的家常做法"], "encoding_format": fmt, **extra}
         for fmt in ("float", "base64", "int8", "binary")
         for extra in ({}, {"documents": ["46 grams a day", "Kyoto"]}, {"documents": ["46 grams a day", "Kyoto"], "top_k": 1})]
VALID.append({"texts_file": "data:text/plain;base64," + base64.b64encode("\n".join(LINES[:3]).encode()).decode()})


@pytest.mark.parametrize("inputs", VALID, ids=lambda inputs: "-".join(f"{k}={str(v)[:12]}" for k, v in inputs.items()))
def test_valid_requests_are_embedded_and_their_responses_conform(server, inputs):
    case = schema["/predictions"]["POST"].Case(body={"input": inputs})
    response = case.call_and_validate(base_url=server.url)  # every check, none left out
    assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text[:300]


def test_the_generated_cases_reached_every_outcome():
    # Runs after the generated cases (pytest keeps a file's order): some were refused by the predictor by name,
    # some by the schema, so each branch above was exercised.
    assert OUTCOMES[("/predictions", 200, "failed")] > 0 and OUTCOMES[("/predictions", 422, None)] > 0, OUTCOMES
