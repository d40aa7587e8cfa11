"""The predictor end to end on the generated checkpoint: setup() then predict() with every argument."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from e5 import DEFAULT_TASK, MODEL_ID, InputError
from e5.encodings import decode_base64

QUERIES = ["how much protein should a female eat", "南瓜的家常做法"]
DOCUMENTS = [
    "As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 grams per day.",
    "1.清炒南瓜丝 原料:嫩南瓜半个 调料:葱、盐、白糖、鸡精 做法: 1、南瓜用刀薄薄的削去表面一层皮",
]


def instruct(task, text):
    return f"Instruct: {task}\nQuery: {text}"


def mixed_texts(n, seed=0):
    """A heavy tail of lengths, a few tokens to well past 512, in several scripts."""
    rng = random.Random(seed)
    words = "the protein female eat 南瓜 的 家常 做法 и в не der die das le la 日本 語".split()
    return [" ".join(rng.choice(words) for _ in range(rng.choice([1, 3, 8, 30, 120, 400, 900]))) for _ in range(n)]


def test_queries_match_the_model_card(embed, model_card):
    out = embed(texts=QUERIES)
    expected = model_card.embed([instruct(DEFAULT_TASK, q) for q in QUERIES])
    assert np.abs(np.array(out.embeddings) - expected.numpy()).max() < 1e-5


def test_documents_match_the_model_card(embed, model_card):
    out = embed(texts=DOCUMENTS, input_type="document")
    expected = model_card.embed(DOCUMENTS)
    assert np.abs(np.array(out.embeddings) - expected.numpy()).max() < 1e-5


def test_texts_past_512_tokens_match_the_model_cards_truncation(embed, model_card):
    texts = mixed_texts(24, seed=3)
    out = embed(texts=texts, input_type="document")
    assert any(out.truncated) and not all(out.truncated)
    expected = model_card.embed(texts, batch_size=5)
    assert np.abs(np.array(out.embeddings) - expected.numpy()).max() < 1e-5


def test_unnormalized_vectors_match_the_model_card(embed, model_card):
    out = embed(texts=DOCUMENTS, input_type="document", normalize=False)
    expected = model_card.embed(DOCUMENTS, normalize=False)
    vectors = np.array(out.embeddings)
    assert np.abs(vectors - expected.numpy()).max() < 1e-4 * np.abs(vectors).max()
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0)


def test_output_shape_norms_counts_and_usage(embed, predictor):
    texts = mixed_texts(10, seed=1)
    out = embed(texts=texts, input_type="document")
    assert out.model == MODEL_ID and out.dimensions == 1024 and out.encoding_format == "float"
    vectors = np.array(out.embeddings)
    assert vectors.shape == (10, 1024)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    full = [len(ids) for ids in predictor.embedder.tokenizer(texts)["input_ids"]]
    assert out.token_counts == [min(n, 512) for n in full]
    assert out.truncated == [n > 512 for n in full]
    assert out.usage == {"prompt_tokens": sum(out.token_counts), "total_tokens": sum(out.token_counts)}


@pytest.mark.parametrize("seed", [0, 1])
def test_order_and_batch_composition_do_not_change_vectors(embed, seed):
    texts = mixed_texts(40, seed=10 + seed)
    together = np.array(embed(texts=texts, input_type="document").embeddings)
    order = list(range(40))
    random.Random(seed).shuffle(order)
    shuffled = np.array(embed(texts=[texts[i] for i in order], input_type="document").embeddings)
    assert np.abs(shuffled - together[order]).max() < 1e-5
    for i in (0, 7, 39):
        alone = np.array(embed(texts=[texts[i]], input_type="document").embeddings)[0]
        assert np.abs(alone - together[i]).max() < 1e-5


def test_small_token_budget_gives_the_same_vectors(embed, predictor, monkeypatch):
    texts = mixed_texts(30, seed=5)
    before = np.array(embed(texts=texts, input_type="document").embeddings)
    # The CUDA shape of planning (pad to 8, a large forward cost) with a budget small enough for many batches.
    monkeypatch.setattr(predictor.embedder, "profile", dataclasses.replace(
        predictor.embedder.profile, pad_multiple=8, token_budget=600, forward_cost=512))
    after = np.array(embed(texts=texts, input_type="document").embeddings)
    assert np.abs(before - after).max() < 1e-5


def test_preset_name_and_its_instruction_give_the_same_vectors(embed):
    from e5 import PRESETS

    by_name = np.array(embed(texts=QUERIES, task="sts").embeddings)
    by_text = np.array(embed(texts=QUERIES, task=PRESETS["sts"].instruction).embeddings)
    other = np.array(embed(texts=QUERIES, task="nq").embeddings)
    assert np.array_equal(by_name, by_text)
    assert not np.allclose(by_name, other)


def test_bare_string_is_embedded_as_one_text(embed):
    out = embed(texts="how much protein should a female eat")
    assert len(out.embeddings) == 1
    assert np.array_equal(out.embeddings, embed(texts=[QUERIES[0]]).embeddings)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(texts=None), "`texts` is required"),
        (dict(texts=[]), "`texts` is required"),
        (dict(texts=["ok", "   "]), "`texts[1]` is empty or whitespace-only"),
        (dict(texts=["ok", 5]), "`texts[1]` must be a string, got int"),
        (dict(texts=["ok"], task=""), "`task` is empty"),
        (dict(texts=["ok"], input_type="passage"), "`input_type` must be one of query, document; got 'passage'"),
        (dict(texts=["ok"], normalize="yes"), "`normalize` must be true or false"),
        (dict(texts=["ok"], encoding_format="fp8"), "`encoding_format` must be one of"),
        (dict(texts=["ok"], top_k=3), "`top_k` applies to `documents`"),
        (dict(texts=["ok"], documents=["d"], top_k=-1), "`top_k` must be a whole number of at least 1"),
        (dict(texts=["ok"], documents=["d", ""]), "`documents[1]` is empty"),
        (dict(texts=["ok"], task="websearch"), "`task` 'websearch' is not a preset name; did you mean `web_search`?"),
        (dict(texts=["ok"], task="STS"), "did you mean `sts`?"),
    ],
)
def test_bad_input_is_a_clear_error(embed, kwargs, fragment):
    with pytest.raises(InputError) as err:
        embed(**kwargs)
    assert fragment in str(err.value)


def test_too_many_texts_names_the_configurable_limit(embed, predictor, monkeypatch):
    from e5.validation import Limits

    monkeypatch.setattr(predictor.service, "limits", Limits(max_texts=3))
    with pytest.raises(InputError, match=r"`texts` has 4 texts; the limit is 3 per request .*E5_MAX_TEXTS"):
        embed(texts=["a", "b", "c", "d"])


def test_truncate_false_rejects_long_text_by_index_and_count(embed, predictor):
    long_text = "the protein female eat " * 300
    n = len(predictor.embedder.tokenizer(long_text)["input_ids"])
    with pytest.raises(InputError) as err:
        embed(texts=["short", long_text], input_type="document", truncate=False)
    assert f"`texts[1]` has {n} tokens; the limit is 512" in str(err.value)
    assert err.value.code == "too_many_tokens"
    assert embed(texts=["short"], truncate=False).truncated == [False]


def test_a_failed_request_leaves_the_predictor_usable(embed):
    before = embed(texts=QUERIES, encoding_format="base64").embeddings_base64  # the exact float32 bits
    with pytest.raises(InputError):
        embed(texts=["ok", ""])
    assert embed(texts=QUERIES, encoding_format="base64").embeddings_base64 == before


# --- documents, ranking and encodings -------------------------------------------------------------------


def test_documents_are_ranked_against_queries(embed):
    out = embed(texts=QUERIES, documents=DOCUMENTS + ["unrelated text about 日本 語"])
    q = np.array(out.embeddings)
    d = np.array(out.document_embeddings)
    assert d.shape == (3, 1024)
    cosines = q @ d.T
    assert np.allclose(out.scores, cosines, atol=1e-5)
    assert np.array_equal(np.round(out.scores, 8), out.scores)  # 8 decimals, like the vectors
    order = np.argsort(-cosines, axis=1, kind="stable")
    assert [[e["index"] for e in row] for row in out.ranking] == order.tolist()
    assert [[e["score"] for e in row] for row in out.ranking] == np.take_along_axis(
        np.asarray(out.scores), order, axis=1).tolist()  # each entry's score is its cell of the matrix
    alone = np.array(embed(texts=DOCUMENTS, input_type="document").embeddings)
    assert np.abs(d[:2] - alone).max() < 1e-5
    assert out.usage["prompt_tokens"] == sum(out.token_counts) + sum(out.document_token_counts)


def test_top_k_cuts_the_ranking_and_leaves_the_matrix_out(embed):
    full = embed(texts=QUERIES, documents=DOCUMENTS + ["unrelated text about 日本 語"])
    out = embed(texts=QUERIES, documents=DOCUMENTS + ["unrelated text about 日本 語"], top_k=2)
    assert out.scores is None  # top_k bounds the response: Q x top_k entries, not Q x D scores
    assert out.ranking == [row[:2] for row in full.ranking]
    assert out.embeddings_base64 is None and out.document_embeddings_base64 is None


def test_no_documents_no_ranking(embed):
    out = embed(texts=QUERIES)
    assert out.document_embeddings is out.scores is out.ranking is out.document_embeddings_base64 is None


@pytest.mark.parametrize("fmt", ["base64", "int8", "binary"])
def test_compact_encodings_decode_to_the_float_vectors(embed, fmt):
    floats = np.asarray(embed(texts=QUERIES, documents=DOCUMENTS).embeddings, dtype=np.float64)
    out = embed(texts=QUERIES, documents=DOCUMENTS, encoding_format=fmt)
    assert out.encoding_format == fmt
    if fmt == "base64":  # the exact float32 bits, of which `float` is the 8-decimal rounding; strings in their own field
        assert out.embeddings == [] and out.document_embeddings == [] and len(out.document_embeddings_base64) == 2
        assert np.abs(np.stack([decode_base64(e) for e in out.embeddings_base64]) - floats).max() <= 5e-9 + 1e-12
        return
    assert out.embeddings_base64 is None and out.document_embeddings_base64 is None and len(out.document_embeddings) == 2
    if fmt == "int8":
        assert np.abs(np.array(out.embeddings) / 127 - floats).max() <= 0.5 / 127 + 1e-6
    else:
        bits = np.unpackbits(np.array(out.embeddings, dtype=np.uint8), axis=1).astype(bool)
        assert np.array_equal(bits, floats > 0)




# --- what a form sends ------------------------------------------------------------------------------------


def test_the_text_box_embeds_one_text_per_line_as_texts_would(embed):
    typed = embed(text="how much protein should a female eat\n\n南瓜的家常做法\n")
    listed = embed(texts=QUERIES)
    assert np.array_equal(typed.embeddings, listed.embeddings) and typed.token_counts == listed.token_counts
    ranked = embed(text=QUERIES[0], documents=DOCUMENTS, top_k=1)
    assert ranked.ranking[0][0]["index"] == embed(texts=QUERIES[:1], documents=DOCUMENTS, top_k=1).ranking[0][0]["index"]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(text="a", texts=["b"]), "give `text` or `texts`, not both"),
        (dict(text="", texts=None), "give `texts` (a list of strings), `text` (one text per line) or `texts_file`"),
        (dict(text="  \n "), "`texts` is required"),
        (dict(text="a", document="d", documents=["e"]), "give `document` or `documents`, not both"),
    ],
)
def test_form_mistakes_are_clear_errors(embed, kwargs, fragment):
    with pytest.raises(InputError) as err:
        embed(**kwargs)
    assert fragment in str(err.value)


def test_the_vectors_can_be_left_out_and_the_rest_stays(embed):
    full = embed(texts=QUERIES, documents=DOCUMENTS)
    out = embed(texts=QUERIES, documents=DOCUMENTS, include_vectors=False)
    assert out.embeddings == [] and out.document_embeddings == [] and out.embeddings_base64 is None
    assert out.ranking == full.ranking and np.array_equal(out.scores, full.scores)
    assert out.token_counts == full.token_counts and out.usage == full.usage
    assert embed(texts=QUERIES, include_vectors=False, encoding_format="base64").embeddings_base64 is None
    assert embed(texts=QUERIES, include_vectors=False).document_embeddings is None  # no documents: still null


def test_a_whole_number_float_is_a_top_k(embed):
    assert embed(texts=QUERIES, documents=DOCUMENTS, top_k=1.0).ranking == embed(
        texts=QUERIES, documents=DOCUMENTS, top_k=1).ranking
    with pytest.raises(InputError, match="`top_k` must be a whole number of at least 1 and at most 10000 \\(E5_MAX_TEXTS\\), got 1.5$"):
        embed(texts=QUERIES, documents=DOCUMENTS, top_k=1.5)
