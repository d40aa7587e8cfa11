"""The memory model of a request (e5/memory_model.py) and the limit chosen from it (E5_MAX_REQUEST_MB): pure
checks of the estimate and the refusal, and the tokenizer's term measured in a fresh process. The bound
itself, on the real server at the worst requests the limit admits: tests/test_memory_bound.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from testkit.uploads import as_upload

from e5 import InputError
from e5.memory_model import MB, Shape, estimate, file_result_bytes, peak_bytes
from e5.validation import Limits, Options, Request, check_file_result, validate_request
from testkit.cog_server import ROOT


def request(queries: int, documents: int = 0, top_k=None, encoding="float", chars: int = 20) -> Request:
    return Request(texts=["q" * chars] * queries, documents=["d" * chars] * documents or None, top_k=top_k,
                   options=Options(input_type="document", encoding_format=encoding))


def test_top_k_drops_the_scores_matrix_and_shrinks_the_ranking():
    full = estimate(Shape(1000, 1000))
    cut = estimate(Shape(1000, 1000, top_k=10))
    assert full["scores"] > 0 and cut["scores"] == 0
    assert cut["ranking"] * 100 == full["ranking"]
    assert cut["engine"] == full["engine"]  # all pairs are still scored and sorted


def test_base64_costs_less_than_numbers_and_leaving_vectors_out_costs_nothing():
    floats, b64 = estimate(Shape(1000)), estimate(Shape(1000, encoding="base64"))
    assert b64["vectors"] * 5 < floats["vectors"]
    assert estimate(Shape(1000, vectors=False))["vectors"] == 0


def test_a_square_of_4000_without_top_k_is_refused_naming_the_limit_and_the_ways_out():
    with pytest.raises(InputError) as err:
        validate_request(request(4000, 4000), Limits())
    message = str(err.value)
    assert err.value.code == "request_too_large"
    assert "the limit is 5000 MB per request (E5_MAX_REQUEST_MB)" in message
    assert "4000 texts x 4000 documents, no top_k" in message
    for way in ("set `top_k`", "`encoding_format` base64", "fewer texts", "`texts_file`", "Ray"):
        assert way in message, message


def test_the_same_square_with_top_k_is_admitted():
    validate_request(request(4000, 4000, top_k=10), Limits())


def test_every_texts_only_request_the_other_limits_allow_fits_the_default():
    limits = Limits()  # 10,000 texts (E5_MAX_TEXTS) of 4,000,000 characters in all (E5_MAX_REQUEST_CHARS)
    shape = Shape(limits.max_texts, chars=limits.max_chars_per_request)
    assert peak_bytes(shape) <= limits.max_request_mb * MB
    validate_request(request(limits.max_texts, chars=400), limits)
    with pytest.raises(InputError, match="use `encoding_format` base64"):
        validate_request(request(limits.max_texts, chars=400), Limits(max_request_mb=4000))


def test_the_limit_is_read_from_the_environment_and_a_bad_value_stops_setup():
    assert Limits.from_env({"E5_MAX_REQUEST_MB": "1500"}).max_request_mb == 1500
    with pytest.raises(ValueError, match="E5_MAX_REQUEST_MB must be a whole number"):
        Limits.from_env({"E5_MAX_REQUEST_MB": "1.5GB"})
    with pytest.raises(InputError, match="E5_MAX_REQUEST_MB"):
        validate_request(request(400, 400), Limits(max_request_mb=100))


def test_a_bulk_result_that_would_not_fit_is_refused_with_the_count_that_would():
    limits = Limits()
    check_file_result(80_000, "npy", limits)  # ~4.8 GB
    with pytest.raises(InputError, match=r"`texts_file` has 100000 texts; returning their vectors as \.npy") as err:
        check_file_result(100_000, "npy", limits)
    most = limits.max_request_mb * MB // file_result_bytes(1, "npy")
    assert f"about {most} texts as .npy" in str(err.value) and err.value.code == "request_too_large"
    with pytest.raises(InputError, match="use `output_file_format` npy"):
        check_file_result(30_000, "jsonl", limits)  # ~23,000 fit as jsonl


TOKENIZE = """
import json, re, sys
from transformers import AutoTokenizer
from e5.memory_model import TOKENIZER_CHAR_BYTES

def memory(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

tok = AutoTokenizer.from_pretrained(sys.argv[1])
texts = [("南瓜 protein der Ä 7 " * 7000)[:100_000]] * 40  # 4,000,000 characters: E5_MAX_REQUEST_CHARS
before = memory("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # the peak starts again from here
ids = tok(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
tokens = sum(map(len, ids))
print(json.dumps({"rise": memory("VmHWM") - before, "tokens": tokens, "bound": tokens * TOKENIZER_CHAR_BYTES}))
"""


def measured(script: str, checkpoint_dir) -> dict:
    """The script's last line, as JSON, from a fresh interpreter (its peak memory is its own)."""
    run = subprocess.run([sys.executable, "-c", script, str(checkpoint_dir)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.splitlines()[-1])


def test_the_tokenizer_term_bounds_tokenizing_the_most_characters_a_request_may_have(checkpoint_dir):
    # The model charges TOKENIZER_CHAR_BYTES per character, assuming at most a token a character (CJK on
    # XLM-R's vocabulary); the test tokenizer makes fewer tokens, so the bound is checked per token.
    result = measured(TOKENIZE, checkpoint_dir)
    assert result["tokens"] > 1_000_000 and 0 < result["rise"] < result["bound"], result


TOKENIZE_ANSWER = """
import json, re, sys
from types import SimpleNamespace
from transformers import AutoTokenizer
import peer_api
from e5.engine import Embedder
from e5.memory_model import tokenize_bytes

def memory(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

embedder = SimpleNamespace(tokenizer=AutoTokenizer.from_pretrained(sys.argv[1]))
texts = [("南 瓜 protein der Ä 7 " * 5000)[:100_000]] * 10  # 1,000,000 characters
before = memory("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # the peak starts again from here
answer = [peer_api.tei_tokens(t) for t in Embedder.tokens(embedder, texts)]  # what /tokenize builds
body = json.dumps(answer, separators=(",", ":")).encode()  # and sends
tokens = sum(map(len, answer))
print(json.dumps({"rise": memory("VmHWM") - before, "tokens": tokens, "bound": tokenize_bytes(tokens)}))
"""


def test_the_tokenize_term_bounds_the_answer_of_the_most_tokens(checkpoint_dir):
    # TEI's /tokenize answers an object per token; the model charges TOKENIZE_CHAR_BYTES per character, at most a
    # token a character: the test tokenizer makes fewer, so the bound is checked per token.
    result = measured(TOKENIZE_ANSWER, checkpoint_dir)
    assert result["tokens"] > 300_000 and 0 < result["rise"] < result["bound"], result


def test_a_tokenize_request_over_the_limit_is_refused_before_tokenizing(predictor, loop, monkeypatch):
    from e5.memory_model import TOKENIZE_CHAR_BYTES
    from e5.service import EmbeddingService

    service = EmbeddingService(predictor.embedder, Limits(max_request_mb=1), 0.05)
    monkeypatch.setattr(predictor.embedder, "tokens", lambda texts: pytest.fail("tokenized"))
    texts = ["x" * (MB // TOKENIZE_CHAR_BYTES)]  # with the instruction, just over 1 MB
    with pytest.raises(InputError, match=r"the request would hold ~1 MB at its peak \(the tokens of 1 texts, "
                                         r"\d+ characters\); the limit is 1 MB per request \(E5_MAX_REQUEST_MB\)") as err:
        loop.run_until_complete(service.tokenize(texts, Options()))
    assert err.value.code == "request_too_large"
    monkeypatch.undo()
    fits = ["x" * (MB // TOKENIZE_CHAR_BYTES - 200)]
    assert loop.run_until_complete(service.tokenize(fits, Options(input_type="document")))[0].text == fits[0]


def test_a_task_limit_below_the_default_task_stops_setup(predictor):
    from e5.service import EmbeddingService

    with pytest.raises(ValueError, match=r"E5_MAX_TASK_CHARS must be at least 74 \(the default task's length\), got 73"):
        EmbeddingService(predictor.embedder, Limits.from_env({"E5_MAX_TASK_CHARS": "73"}), 0.05)
    EmbeddingService(predictor.embedder, Limits.from_env({"E5_MAX_TASK_CHARS": "74"}), 0.05)


@pytest.mark.parametrize("value", [1e30, 2.5, 10_001])
def test_top_k_out_of_range_gets_a_clear_error(value):
    from e5.validation import validate_top_k

    with pytest.raises(InputError, match=r"`top_k` must be a whole number of at least 1 and at most 10000 "
                                         r"\(E5_MAX_TEXTS\), got ") as err:
        validate_top_k(value)
    assert str(err.value).endswith(f"got {value!r}")  # as sent: 1e+30, not the 31-digit integer it stands for


def test_a_bulk_job_whose_result_would_not_fit_is_refused_before_any_forward(predictor, loop, tmp_path, monkeypatch):
    from conftest import DEFAULTS

    forwards = []
    monkeypatch.setattr(predictor.service, "limits", Limits(max_request_mb=1))  # ~16 texts as .npy
    monkeypatch.setattr(predictor.embedder, "forward", lambda *a, **k: forwards.append(1))
    path = tmp_path / "texts.txt"
    path.write_text("".join(f"text {i}\n" for i in range(100)))
    with pytest.raises(InputError, match=r"`texts_file` has 100 texts; returning their vectors as \.npy would hold"):
        loop.run_until_complete(predictor.predict(**{**DEFAULTS, "texts_file": as_upload(path), "input_type": "document"}))
    assert forwards == []


@pytest.mark.parametrize("char", ["\ufdfa", "\u33af", "\ufdfb", "\u3316"])  # the characters NFKC expands most
def test_characters_that_expand_are_counted_as_the_tokenizer_reads_them(trained_dir, char):
    # XLM-R's tokenizer normalizes before it splits: U+FDFA makes 4 tokens, more than its one character. The memory
    # model's count (read_length) must stay at or above the tokens, as it does for ordinary text (its length).
    from transformers import AutoTokenizer

    from e5.validation import read_length

    tokenizer = AutoTokenizer.from_pretrained(str(trained_dir))
    for text in (char * 1000, " ".join([char] * 500)):
        tokens = len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        assert len(text) < tokens <= read_length(text) + 1, (hex(ord(char)), tokens)
    assert read_length("how much protein 南瓜的家常做法 Ä") == len("how much protein 南瓜的家常做法 Ä")


def test_the_character_limit_counts_what_was_sent_and_the_memory_model_what_is_read():
    document = Options(input_type="document")
    request = validate_request(Request(["\ufdfa" * 100], options=document), Limits())
    assert request.shape.chars == 1800  # 18 characters each under NFKC
    with pytest.raises(InputError, match=r"^the request has 100 characters in all"):
        validate_request(Request(["\ufdfa" * 100], options=document), Limits(max_chars_per_request=99))
    assert validate_request(Request(["\ufdfa" * 100], options=document), Limits(max_chars_per_request=100)).texts
