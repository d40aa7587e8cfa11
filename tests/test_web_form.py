"""The web form as Cog's playground draws it from the schema the image carries (testkit/playground.py holds its
rules, read in Cog's source): for every input, the request a person sends by leaving the form as shown, and by
ticking the input and touching nothing else, gets an answer of ours, never a 422 from Cog's server."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from testkit import playground
from testkit.cog_server import BULK_SCHEMA, SCHEMA, CogServer

MAIN = json.loads(SCHEMA.read_text(encoding="utf-8"))
BULK = json.loads(BULK_SCHEMA.read_text(encoding="utf-8"))
TYPED = {"text": "how much protein should a female eat"}  # one line typed in the `text` box
MISSING = "`texts` is required: give `texts` (a list of strings), `text` (one text per line) or `texts_file`"


@pytest.fixture(scope="module")
def server(checkpoint_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with CogServer(checkpoint_dir, concurrency=4, log_path=log) as s:
        assert s.wait_until() == "READY", log.read_text()[-3000:]
        yield s


def requests_of(document: dict, base: dict) -> dict[str, dict]:
    """Every request the form gives: as shown, and with each input ticked as shown, over what `base` typed."""
    shown = {**playground.left_as_shown(document), **base}
    out = {"left as shown": shown}
    for name in playground.fields(document):
        if name not in base:
            out[f"{name} ticked as shown"] = playground.ticked_as_shown(document, name, shown)
    return out


# --- the rules, on the schema's shape this form once had ------------------------------------------------------


def test_the_rules_see_a_null_default_become_a_422():
    # `documents: Optional[list[str]] = Input(default=None)` as Cog writes it: ticked, the editor shows [] while
    # the form holds null; the playground's own check passes it (nullable), and Cog's server refuses it.
    old = {"components": {"schemas": {"Input": {"type": "object", "properties": {
        "documents": {"type": "array", "items": {"type": "string"}, "default": None, "nullable": True}}}}}}
    request = playground.ticked_as_shown(old, "documents")
    assert request == {"documents": None} and playground.shown(old, "documents", request) == "[]"
    assert playground.form_issues(old, request) == []
    assert playground.server_issues(old, request) == [("documents", "None is not of type 'array'")]
    assert playground.form_issues(old, {"documents": ["a", 2]}) != []  # and the rules do check types


# --- the main model ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("document", [MAIN, BULK], ids=["main", "bulk"])
def test_a_ticked_input_sends_what_it_shows(document):
    fields = playground.fields(document)
    for name, schema in fields.items():
        request = playground.ticked_as_shown(document, name, {})
        sent = request[name]
        assert sent is not None, name  # null: the control shows an empty value and Cog's server answers 422
        shown = playground.shown(document, name, request)
        if playground.choices(document, schema) is not None or schema.get("type") in ("string", "integer", "number"):
            assert shown == str(sent), name
        elif schema.get("type") == "boolean":
            assert shown == str(sent).lower(), name
        else:
            assert json.loads(shown) == sent, name


@pytest.mark.parametrize("document", [MAIN, BULK], ids=["main", "bulk"])
def test_an_unticked_input_that_shows_another_value_says_what_applies(document):
    # Unticked, a boolean reads a greyed "false" (input-view.ts: `String(value ?? false)`) while the default
    # true applies, since nothing is sent. A control showing a value that is not the default must say so.
    for name, schema in playground.fields(document).items():
        if name in playground.required(document):
            continue
        shown = playground.shown(document, name, {})
        default = schema["default"]
        empty = shown in ("", "Select a value") or shown == playground.as_json(default)
        if not empty:
            text = playground.description(document, name)
            assert f"Unticked, this box sends nothing and {json.dumps(default)} applies" in text, name
            assert text.endswith(f"default {json.dumps(default)}"), name


@pytest.mark.parametrize("base", [{}, TYPED], ids=["nothing typed", "one line typed"])
def test_every_input_left_or_ticked_as_shown_gets_our_answer(server, base):
    for label, request in requests_of(MAIN, base).items():
        issues = playground.form_issues(MAIN, request)
        if label == "texts_file ticked as shown":
            # No file chosen: the playground's own check stops it under the field ('' is not a URI), and an
            # API call that sends the same "" means no file, as the other empty values do.
            assert [field for field, _ in issues] == ["texts_file"], issues
        else:
            assert issues == [], (label, issues)
        assert playground.server_issues(MAIN, request) == [], label
        status, body = server.predict(request)
        assert status == 200, (label, body)
        if base:
            assert body["status"] == "succeeded", (label, body)
            assert len(body["output"]["embeddings"]) == 1, label
        else:
            assert body["status"] == "failed" and MISSING in body["error"], (label, body)


def test_documents_typed_one_per_line_rank_as_the_list_does(server):
    typed = server.predict({**TYPED, "document": "46 grams a day for women\n\n清炒南瓜丝\n", "include_vectors": False})
    listed = server.predict({**TYPED, "documents": ["46 grams a day for women", "清炒南瓜丝"], "include_vectors": False})
    assert typed[0] == listed[0] == 200 and typed[1]["status"] == "succeeded", typed
    assert typed[1]["output"]["scores"] == listed[1]["output"]["scores"]
    assert typed[1]["output"]["ranking"] == listed[1]["output"]["ranking"]
    assert [len(row) for row in typed[1]["output"]["ranking"]] == [2]


@pytest.mark.parametrize(
    "request_, fragment",
    [
        ({"text": "fine\n\n  \n" + "word " * 600, "truncate": False}, "`text` line 4 has "),
        ({"text": "fine\n\nalso fine\n" + "x" * 100_001}, "`text` line 4 has 100001 characters"),
        ({**TYPED, "document": "a\n\n\n" + "word " * 600, "truncate": False}, "`document` line 4 has "),
        ({"texts": ["fine", " "]}, "`texts[1]` is empty"),  # a list's item keeps its index
    ],
    ids=["text", "text-chars", "document", "texts"],
)
def test_an_error_names_the_line_a_person_sees(server, request_, fragment):
    status, body = server.predict(request_)
    assert status == 200 and body["status"] == "failed" and fragment in body["error"], body


def test_metrics_are_rounded_for_reading(server):
    status, body = server.predict({**TYPED, "document": "a\nb"})
    assert status == 200 and body["status"] == "succeeded", body
    seconds = body["metrics"]["seconds"]
    assert seconds and all(round(value, 4) == value for value in seconds.values()), seconds


def test_the_file_result_is_a_data_url_a_person_can_save(server, tmp_path):
    # What docs/web-form.md tells a person to do with `embeddings_file`: its bytes are the base64 after the comma.
    corpus = "Kyoto is in Japan\nthe protein women need\n".encode()
    url = "data:text/plain;base64," + base64.b64encode(corpus).decode()
    for fmt in ("npy", "jsonl"):
        status, body = server.predict({"texts_file": url, "output_file_format": fmt})
        assert status == 200 and body["status"] == "succeeded", body
        header, data = body["output"]["embeddings_file"].split(",", 1)
        assert header.startswith("data:") and header.endswith(";base64")
        saved = tmp_path / f"vectors.{fmt}"
        saved.write_bytes(base64.b64decode(data))
        inline = server.predict({"text": corpus.decode()})[1]["output"]["embeddings"]
        if fmt == "npy":
            np.testing.assert_allclose(np.load(saved), inline, atol=1e-7)
        else:
            rows = [json.loads(line)["embedding"] for line in saved.read_text().splitlines()]
            assert all(round(value, 8) == value for row in rows for value in row)  # 8 decimals, as inline
            np.testing.assert_allclose(rows, inline, atol=1e-7)


# --- the bulk model: its form, by the rules (its server runs in tests/test_bulk_model.py) ----------------------


def test_the_bulk_form_sends_no_null_and_asks_for_the_file():
    shown = playground.left_as_shown(BULK)
    assert [message for _, message in playground.form_issues(BULK, shown)] == ["'texts_file' is a required property"]
    with_file = {**shown, "texts_file": "data:text/plain;base64," + base64.b64encode(b"a\nb\n").decode()}
    for label, request in requests_of(BULK, with_file).items():
        assert playground.form_issues(BULK, request) == [] and playground.server_issues(BULK, request) == [], label


# --- scripts/playground.py: Cog's assets served, and the model's API forwarded, without Go -------------------


def test_the_stand_in_serves_the_assets_and_forwards_only_to_its_target(tmp_path):
    import threading
    import urllib.error
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from scripts.playground import serve

    class Model(BaseHTTPRequestHandler):  # a model API that echoes what reached it
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            answer = json.dumps({"path": self.path, "body": body.decode(), "prefer": self.headers.get("Prefer")})
            self.send_response(422 if b"bad" in body else 200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, *args):
            pass

    (tmp_path / "index.html").write_text("<html>form</html>")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "app.js").write_text("let x = 1")
    model = ThreadingHTTPServer(("127.0.0.1", 0), Model)
    target = f"http://127.0.0.1:{model.server_address[1]}"
    front = serve(tmp_path, target, 0)
    for server in (model, front):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{front.server_address[1]}"

    def call(path, body=None, headers=None):
        request = urllib.request.Request(url + path, data=body, headers=headers or {}, method="POST" if body else "GET")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, r.headers["Content-Type"], r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers["Content-Type"], err.read()

    try:
        assert call("/") == (200, "text/html", b"<html>form</html>")
        assert call("/assets/app.js")[:2] == (200, "text/javascript")  # a module script needs its type
        assert call("/../predict.py")[0] == 404 and call("/nothing.js")[0] == 404
        assert json.loads(call("/config")[2])["target"] == target
        status, _, body = call("/proxy/predictions", b'{"input": {}}',
                               {"X-Cog-Target": target, "Content-Type": "application/json", "Prefer": "respond-async"})
        assert status == 200 and json.loads(body) == {"path": "/predictions", "body": '{"input": {}}',
                                                      "prefer": "respond-async"}
        assert call("/proxy/predictions", b"bad", {"X-Cog-Target": target})[0] == 422  # the model's status, as sent
        assert call("/proxy/predictions", b"{}", {"X-Cog-Target": "http://example.com"})[0] == 403
    finally:
        front.shutdown()
        model.shutdown()
