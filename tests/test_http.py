"""The real Cog server (coglet) on 127.0.0.1 with the generated checkpoint, as a client of the image sees it.

The server runs in the repository root with .cog/openapi_schema.json beside predict.py, as in every image
`cog build` makes: it checks each request against that schema before Python sees it.
"""

from __future__ import annotations

import ast
import base64
import json
import mimetypes
import re
import subprocess
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from benchmarks.loadtest import send_retrying_busy
from testkit.cog_server import ROOT, CogServer
from e5.encodings import decode_base64


@pytest.fixture(scope="module")
def server(checkpoint_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with CogServer(checkpoint_dir, log_path=log) as s:  # the image's 32 slots (CogServer's default)
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
@pytest.mark.parametrize("top_k", [None, 2])
def test_every_encoding_and_the_ranking_arrive_as_the_direct_call_makes_them(server, embed, encoding_format, top_k):
    inputs = {"texts": ["how much protein should a female eat", "南瓜的家常做法"], "encoding_format": encoding_format,
              "documents": ["46 grams a day for women", "清炒南瓜丝", "Kyoto is in Japan"]}
    if top_k is not None:
        inputs["top_k"] = top_k
    status, body = server.predict(inputs)
    assert status == 200 and body["status"] == "succeeded", body
    out = body["output"]
    direct = embed(**{"top_k": None, **inputs})

    def as_json(value):  # what the direct call's arrays and lists become in JSON
        return json.loads(json.dumps(np.asarray(value).tolist() if isinstance(value, np.ndarray) else value))

    assert [[e["index"] for e in row] for row in out["ranking"]] == [[e["index"] for e in row] for row in direct.ranking]
    assert len(out["ranking"][0]) == (top_k or 3)
    got_scores = [[e["score"] for e in row] for row in out["ranking"]]
    assert np.abs(np.array(got_scores) - [[e["score"] for e in row] for row in direct.ranking]).max() < 1e-5
    if top_k is None:
        assert np.abs(np.array(out["scores"]) - np.array(direct.scores)).max() < 1e-5
    else:
        assert out["scores"] is None
    numbers, strings = ("embeddings", "document_embeddings"), ("embeddings_base64", "document_embeddings_base64")
    if encoding_format == "base64":
        assert all(out[key] == [] for key in numbers)
        numbers = strings
    else:
        assert all(out[key] is None for key in strings)
    for key in numbers:
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


def test_the_server_carries_the_committed_schema(server):
    committed = json.loads((ROOT / ".cog" / "openapi_schema.json").read_text())
    served = server.get("/openapi.json")
    assert served["components"]["schemas"]["Input"] == committed["components"]["schemas"]["Input"]
    assert served["components"]["schemas"]["Output"] == committed["components"]["schemas"]["Output"]


@pytest.mark.parametrize(
    "inputs, field, message",
    [
        ({"texts": "hello"}, "texts", '"hello" is not of type "array"'),
        ({"texts": ["ok", 3]}, "texts/1", '3 is not of type "string"'),
        ({"texts": ["ok", None]}, "texts/1", 'null is not of type "string"'),
        ({"texts": [["nested"]]}, "texts/0", '["nested"] is not of type "string"'),
        ({"texts": {"a": "b"}}, "texts", '{"a":"b"} is not of type "array"'),
        ({"texts": ["ok"], "input_type": "passage"}, "input_type", '"passage" is not one of ["query","document"]'),
        ({"texts": ["ok"], "encoding_format": "fp16"}, "encoding_format",
         '"fp16" is not one of ["float","base64","int8","binary"]'),
        ({"texts": ["ok"], "normalize": "yes"}, "normalize", '"yes" is not of type "boolean"'),
        ({"texts": ["ok"], "documents": ["d"], "top_k": -1}, "top_k", "-1 is less than the minimum of 0"),
        ({"texts": ["ok"], "documents": ["d"], "top_k": True}, "top_k", 'true is not of type "integer"'),
        ({"texts": ["ok"], "documents": None}, "documents", 'null is not of type "array"'),
    ],
)
def test_type_choice_and_bound_errors_are_422_before_the_predictor(server, inputs, field, message):
    status, body = server.predict(inputs)
    assert status == 422, body
    assert {"loc": ["body", "input", field], "msg": message, "type": "value_error"} in body["detail"], body


@pytest.mark.parametrize(
    "inputs, fragment",
    [
        ({}, "`texts` is required"),
        ({"texts": ["ok", "   "]}, "`texts[1]` is empty or whitespace-only"),
        ({"texts": []}, "`texts` is required"),  # [] is what a ticked, untouched box sends: none
        ({"texts": ["ok"], "top_k": 2}, "`top_k` applies to `documents`"),
        ({"texts": ["ok", "x" * 100_001]}, "`texts[1]` has 100001 characters; the limit is 100000"),
    ],
)
def test_what_the_schema_cannot_say_fails_the_prediction_with_our_message(server, inputs, fragment):
    status, body = server.predict(inputs)
    assert status == 200 and body["status"] == "failed" and fragment in body["error"], body


def test_unknown_fields_are_dropped(server):
    status, body = server.predict({"texts": ["hello world"], "texts_fiel": "oops", "normalise": False})
    assert status == 200 and body["status"] == "succeeded", body
    plain = server.predict({"texts": ["hello world"]})[1]
    assert body["output"]["embeddings"] == plain["output"]["embeddings"]


def test_malformed_json_is_a_400(server):
    status, _ = server.post("/predictions", b"{not json")
    assert status == 400
    assert server.status() == "READY"


def test_concurrent_requests_are_merged_and_each_correct(server, embed):
    # As many clients as the image has slots: each gets its own vector, none is turned away for good.
    texts = [f"query {i} about protein and pumpkins" for i in range(server.concurrency)]
    assert len(texts) == 32
    want = {t: np.array(embed(texts=[t]).embeddings[0]) for t in texts}
    with ThreadPoolExecutor(len(texts)) as pool:
        # Retrying coglet's 409 with free slots, as docs/reliability.md tells clients ("409 with free slots").
        results = [(r["status"], r["body"]) for r in pool.map(lambda t: send_retrying_busy(server, {"texts": [t]}), texts)]
    merged = 0
    for t, (status, body) in zip(texts, results):
        assert status == 200 and body["status"] == "succeeded", body  # 32 slots: every one of 32 clients served
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
    """The reason is in the log and in /health-check's `setup.logs` (the README says to read it there); a
    prediction gets Cog's own 503, which the predictor cannot word."""
    fix = f"does not exist; fill it with `python scripts/download_weights.py --dest {tmp_path / 'no-weights'}`"
    with CogServer(tmp_path / "no-weights", log_path=tmp_path / "log") as s:
        assert s.wait_until() == "SETUP_FAILED"
        assert fix in s.get("/health-check")["setup"]["logs"]
        status, body = s.predict({"texts": ["hello"]})
        assert status == 503 and body["error"].startswith("Setup has not finished yet"), body
    log = (tmp_path / "log").read_text(errors="replace")
    assert f"does not exist; fill it with `python scripts/download_weights.py --dest {tmp_path / 'no-weights'}`" in log


# --- the README's examples, as a user of the image sends them ----------------------------------------------


def cli_value(value: str, prop: dict):
    """`cog predict -i key=value` as Cog's CLI turns it into JSON (pkg/predict/input.go newSingleInput).

    A JSON array string for a list input, else the one value as a one-element list; "@path" is a file; a
    scalar is coerced to the input's type when it parses as one, else sent as the string typed.
    """
    kind = prop.get("type") or ("string" if "allOf" in prop else None)
    if value.startswith("@"):  # the CLI sends the file as a data URL typed by its extension
        path = Path(value[1:])
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()
    if kind == "array":
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        return parsed if isinstance(parsed, list) else [value]
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    if kind in ("integer", "number"):
        try:
            return int(value)
        except ValueError:
            return float(value) if kind == "number" else value
    return value


def readme_inputs() -> dict[str, list[dict]]:
    """Every request the README shows, by kind: `cog predict -i` lines, curl bodies, `replicate.run(input=...)`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    # The bulk model's section calls the other model (tests/test_bulk_model.py runs its lines).
    head, _, rest = readme.partition("## The bulk model")
    readme = head + (rest.split("\n## ", 1)[1] if rest else "")
    props = json.loads((ROOT / ".cog" / "openapi_schema.json").read_text())["components"]["schemas"]["Input"]["properties"]
    found = {"cog predict": [], "curl": [], "python": []}
    for line in re.findall(r"^cog predict (.+)$", readme, flags=re.M):
        words = shlex.split(line)
        pairs = [words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "-i"]
        found["cog predict"].append({key: cli_value(value, props[key]) for key, value in pairs})
    for command in readme.split("curl ")[1:]:
        body = re.match(r"[^']*(?:'[^']*'[^']*)*?-d '(\{.*?\})'", command, flags=re.S)
        if body and "/predictions" in command[: body.start(1)]:  # Cog's route; the OpenAI face is tested apart
            found["curl"].append(json.loads(body.group(1))["input"])
    for literal in re.findall(r"input=(\{.*?\})\)", readme, flags=re.S):
        found["python"].append(ast.literal_eval(literal))
    return found


@pytest.fixture
def readme_files(tmp_path, monkeypatch):
    """The files the README's commands name, in the folder they run from."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("Kyoto is in Japan\nthe protein women need\n", encoding="utf-8")


def test_the_readme_shows_requests_of_every_kind(readme_files):
    for kind, inputs in readme_inputs().items():
        assert inputs and all(inputs), kind


def test_every_request_the_readme_shows_succeeds_on_the_image_server(server, readme_files):
    for inputs in (i for kind in readme_inputs().values() for i in kind):
        status, body = server.predict(inputs)
        assert status == 200 and body["status"] == "succeeded", (inputs, body)


def readme_block(language: str, marker: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    return next(block for block in blocks if marker in block)


@pytest.mark.parametrize("file_format", ["npy", "jsonl"])
def test_the_readmes_bulk_call_and_its_python_decode_the_vectors_as_written(server, readme_files, file_format):
    """The first screen's `texts_file` curl, run by bash against the server, then its Python lines (the jsonl
    line is the commented one, with `output_file_format` added to the input as its comment says)."""
    command = readme_block("bash", "texts_file").replace("127.0.0.1:5000", f"127.0.0.1:{server.port}")
    python = readme_block("python", "embeddings_file")
    if file_format == "jsonl":
        command = command.replace('\\"input_type\\": \\"document\\"',
                                  '\\"input_type\\": \\"document\\", \\"output_file_format\\": \\"jsonl\\"')
        assert "output_file_format" in command
        python = python.replace("vectors = np.load(", "npy = (").replace("# vectors = ", "vectors = ")
    subprocess.run(["bash", "-c", command], check=True, timeout=120)
    scope = {}
    exec(python, scope)
    texts = Path("corpus.txt").read_text(encoding="utf-8").splitlines()
    status, direct = server.predict({"texts": texts, "input_type": "document"})
    assert np.abs(np.asarray(scope["vectors"]) - np.array(direct["output"]["embeddings"])).max() < 1e-5


# --- what a schema-driven form sends, through the server as built ------------------------------------------


def test_a_form_can_embed_typed_lines_and_read_the_best_document(server):
    status, body = server.predict({"text": "how much protein should a female eat\n南瓜的家常做法",
                                   "documents": ["46 grams a day for women", "清炒南瓜丝"], "top_k": 1,
                                   "include_vectors": False})
    assert status == 200 and body["status"] == "succeeded", body
    out = body["output"]
    assert out["embeddings"] == [] and out["document_embeddings"] == [] and out["scores"] is None
    assert [len(row) for row in out["ranking"]] == [1, 1] and set(out["ranking"][0][0]) == {"index", "score"}
    assert len(json.dumps(out)) < 1000  # readable: no vectors, no matrix
    listed = server.predict({"texts": ["how much protein should a female eat", "南瓜的家常做法"],
                             "documents": ["46 grams a day for women", "清炒南瓜丝"], "top_k": 1})[1]["output"]
    assert [row[0]["index"] for row in out["ranking"]] == [row[0]["index"] for row in listed["ranking"]]


def test_a_whole_number_float_top_k_passes_the_schema_and_the_predictor(server):
    status, body = server.predict({"texts": ["ok"], "documents": ["a", "b", "c"], "top_k": 2.0})
    assert status == 200 and body["status"] == "succeeded", body
    assert len(body["output"]["ranking"][0]) == 2
    status, body = server.predict({"texts": ["ok"], "documents": ["a", "b"], "top_k": 1.5})
    assert status == 422 and body["detail"][0]["msg"] == '1.5 is not of type "integer"', body


@pytest.mark.parametrize(
    "inputs, fragment",
    [
        ({"text": "", "task": "nq"}, "give `texts` (a list of strings), `text` (one text per line) or `texts_file`"),
        ({"text": "a", "texts": ["b"]}, "give `text` or `texts`, not both"),
        ({"text": "a", "document": "d", "documents": ["e"]}, "give `document` or `documents`, not both"),
    ],
)
def test_form_mistakes_name_the_way_out(server, inputs, fragment):
    status, body = server.predict(inputs)
    assert status == 200 and body["status"] == "failed" and fragment in body["error"], body
