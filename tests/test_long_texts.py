"""`long_texts`: texts past 512 tokens embedded whole (e5/windows.py), on both faces and the bulk paths.

The reference below is written from the description (docs/long-texts.md), not from the engine: tokenize the
text as the recipe writes it, keep the recipe's prefix (a query's instruction) in every window, cut the text's
tokens into windows of what room is left with 128 tokens of overlap, embed each window with the model card's
code, and average by each window's tokens of the text, normalised again.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from e5 import InputError
from e5.memory_model import Shape, estimate
from e5.validation import Options, Request, extra_windows, validate_request, Limits
from e5.windows import MIN_STRIDE, Window, max_windows, pool, split
from reference import average_pool, get_detailed_instruct

TOLERANCE = 2e-5
TASK = "Given a web search query, retrieve relevant passages that answer the query"
SHORT = ["how much protein should a female eat", "南瓜的家常做法"]
LONG = " ".join(f"Chapter {i}: the river town kept its records in a ledger of {i * 7} pages." for i in range(170))
CJK_LONG = "南瓜的家常做法很多，清炒南瓜丝是其中一种。" * 120


# --- the pure parts -----------------------------------------------------------------------------------------


def fake_text(prefix: int, tokens: int, width: int = 2):
    """A formatted text of `prefix` prefix tokens then `tokens` text tokens, `width` characters each."""
    ids = [0] + list(range(100, 100 + prefix + tokens)) + [2]
    spans = [(0, 0)] + [(i * width, (i + 1) * width) for i in range(prefix + tokens)] + [(0, 0)]
    return ids, spans, prefix * width


def test_windows_keep_the_prefix_overlap_by_128_and_cover_every_token():
    ids, spans, prefix_chars = fake_text(prefix=10, tokens=1500)
    pieces, windows = split(ids, spans, prefix_chars, limit=512)
    room = 512 - 2 - 10
    assert all(p[0] == 0 and p[-1] == 2 and p[1:11] == ids[1:11] and len(p) <= 512 for p in pieces)
    texts = [p[11:-1] for p in pieces]
    assert texts[0] == ids[11:11 + room]
    for before, after in zip(texts, texts[1:]):
        assert before[-128:] == after[:128]  # consecutive windows share 128 tokens
    assert sorted({t for piece in texts for t in piece}) == ids[11:-1] and texts[-1][-1] == ids[-2]
    assert [(w.start, w.end) for w in windows][0] == (0, room * 2)
    assert all(w.end - w.start == 2 * w.tokens for w in windows) and windows[-1].end == 1500 * 2


def test_an_instruction_that_leaves_too_little_room_is_refused():
    ids, spans, prefix_chars = fake_text(prefix=512 - 2 - 128 - MIN_STRIDE + 1, tokens=1000)
    with pytest.raises(InputError, match="use a shorter `task`") as refused:
        split(ids, spans, prefix_chars, limit=512)
    assert refused.value.code == "task_too_long_for_windows"


@settings(max_examples=60, deadline=None)
@given(prefix=st.integers(0, 200), widths=st.lists(st.integers(1, 4), min_size=511, max_size=3000))
def test_the_bound_before_tokenizing_is_never_below_the_windows_made(prefix, widths):
    """max_windows knows characters only: any tokenization of at least a character a token stays under it."""
    starts = np.concatenate([[0], np.cumsum(widths)])
    ids = [0] + list(range(100, 100 + prefix + len(widths))) + [2]
    spans = [(0, 0)] + [(i, i + 1) for i in range(prefix)] + [(prefix + a, prefix + b) for a, b in
                                                               zip(starts[:-1], starts[1:])] + [(0, 0)]
    if len(ids) <= 512:
        return
    try:
        pieces, _ = split(ids, spans, prefix, limit=512)
    except InputError:
        return
    assert len(pieces) <= max_windows(int(starts[-1]), prefix, 512)


def test_pool_is_the_weighted_mean_renormalized_and_one_window_is_kept_as_it_is():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    windows = [Window(0, 0, 5, 5), Window(1, 0, 9, 300), Window(1, 5, 20, 100), Window(2, 0, 3, 3)]
    out = pool(vectors, windows, 3, normalize=True)
    mean = (vectors[1] * 300 + vectors[2] * 100) / 400
    assert np.allclose(out[1], mean / np.linalg.norm(mean), atol=1e-6)
    assert np.array_equal(out[0], vectors[0]) and np.array_equal(out[2], vectors[3])
    assert np.allclose(pool(vectors, windows, 3, normalize=False)[1], mean, atol=1e-6)
    assert np.allclose(pool(vectors, windows, 3, normalize=True, weighting="equal")[1],
                       (vectors[1] + vectors[2]) / np.linalg.norm(vectors[1] + vectors[2]), atol=1e-6)


# --- the reference, from the description --------------------------------------------------------------------


def reference_windows(tokenizer, text: str, prefix: str) -> tuple[list[list[int]], list[int], list[tuple[int, int]]]:
    """(each window's ids, its count of the text's tokens, its span in `text`) as docs/long-texts.md says."""
    encoded = tokenizer(prefix + text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    inside = sum(1 for _, end in offsets if end <= len(prefix))
    head, body, body_offsets = ids[:inside], ids[inside:], offsets[inside:]
    room = 512 - 2 - len(head)
    windows, counts, spans = [], [], []
    for start in range(0, len(body), room - 128):
        piece = body[start:start + room]
        windows.append([tokenizer.cls_token_id, *head, *piece, tokenizer.sep_token_id])
        counts.append(len(piece))
        spans.append((max(body_offsets[start][0] - len(prefix), 0), body_offsets[start + len(piece) - 1][1] - len(prefix)))
        if start + room >= len(body):
            break
    return windows, counts, spans


@torch.no_grad()
def reference_vectors(model_card, windows: list[list[int]]) -> np.ndarray:
    out = []
    for ids in windows:  # one at a time: no padding, each window as the model card embeds a text
        batch = torch.tensor([ids])
        hidden = model_card.model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
        out.append(F.normalize(average_pool(hidden, torch.ones_like(batch)), p=2, dim=1)[0].numpy())
    return np.array(out)


def reference_mean(model_card, text: str, prefix: str) -> tuple[np.ndarray, int]:
    windows, counts, _ = reference_windows(model_card.tokenizer, text, prefix)
    vectors = reference_vectors(model_card, windows)
    mean = (vectors * np.array(counts)[:, None]).sum(0) / sum(counts)
    return mean / np.linalg.norm(mean), sum(len(w) for w in windows)


def close(a, b) -> bool:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).max()) < TOLERANCE


@pytest.mark.parametrize("mode", ["mean", "windows"])
def test_a_text_that_fits_gets_exactly_todays_vector_in_every_mode(embed, mode):
    for input_type in ("query", "document"):
        today = embed(texts=SHORT, input_type=input_type)
        out = embed(texts=SHORT, input_type=input_type, long_texts=mode)
        assert np.array_equal(np.asarray(out.embeddings), np.asarray(today.embeddings))
        assert out.token_counts == today.token_counts and out.usage == today.usage


@pytest.mark.parametrize("text", [LONG, CJK_LONG], ids=["latin", "cjk"])
def test_mean_is_the_token_weighted_mean_of_the_windows_as_the_description_computes_them(embed, model_card, text):
    query_prefix = get_detailed_instruct(TASK, "")
    out = embed(texts=[SHORT[0], text], long_texts="mean")
    expected, tokens = reference_mean(model_card, text, query_prefix)
    assert close(out.embeddings[1], expected)
    assert out.token_counts[1] == tokens > 1024 and out.truncated == [False, False]
    assert out.usage["total_tokens"] == sum(out.token_counts)
    documents = embed(texts=[text], input_type="document", long_texts="mean")
    assert close(documents.embeddings[0], reference_mean(model_card, text, "")[0])


def test_windows_mode_returns_each_window_and_the_characters_it_covers(embed, model_card):
    out = embed(texts=[SHORT[0], LONG], input_type="document", long_texts="windows")
    windows, counts, spans = reference_windows(model_card.tokenizer, LONG, "")
    assert len(out.embeddings) == 1 + len(windows) >= 4
    assert [(w["text"], w["start"], w["end"]) for w in out.windows] == [(0, 0, len(SHORT[0]))] + [(1, *s) for s in spans]
    assert [w["tokens"] for w in out.windows][1:] == [len(w) for w in windows]
    assert close(out.embeddings[1:], reference_vectors(model_card, windows))
    first, last = out.windows[1], out.windows[-1]
    assert LONG[first["start"]:first["end"]].startswith("Chapter 0:")
    assert LONG[last["start"]:last["end"]].endswith(LONG[-20:])
    assert out.token_counts[1] == sum(w["tokens"] for w in out.windows[1:])


def test_mean_ranks_documents_by_their_whole_text(embed):
    out = embed(texts=SHORT[:1], documents=[LONG, SHORT[1]], long_texts="mean")
    whole = embed(texts=[LONG], input_type="document", long_texts="mean").embeddings[0]
    assert close(out.document_embeddings[0], whole)
    assert out.document_token_counts[0] > 512 and not any(out.document_truncated)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(texts=["q"], documents=["d"], long_texts="windows"), "rank with `long_texts` mean"),
    (dict(texts=[LONG], long_texts="pieces"), "`long_texts` must be one of truncate, mean, windows"),
    (dict(texts=[LONG], long_texts="mean", task="x " * 900), "use a shorter `task`"),
])
def test_combinations_that_cannot_work_are_refused_naming_the_input(embed, kwargs, fragment):
    with pytest.raises(InputError) as refused:
        embed(**kwargs)
    assert fragment in str(refused.value)


def test_a_file_embeds_each_text_whole_with_mean_and_refuses_windows(embed, tmp_path):
    texts = [SHORT[0], LONG, CJK_LONG]
    direct = embed(texts=texts, input_type="document", long_texts="mean")
    (tmp_path / "long.txt").write_text("\n".join(texts), encoding="utf-8")
    out = embed(texts_file=tmp_path / "long.txt", input_type="document", long_texts="mean", output_file_format="jsonl")
    rows = [json.loads(line) for line in out.embeddings_file.read_text().splitlines()]
    assert close([r["embedding"] for r in rows], direct.embeddings) and out.token_counts == direct.token_counts
    with pytest.raises(InputError, match="a file's result has one row per text"):
        embed(texts_file=tmp_path / "long.txt", long_texts="windows")


# --- bounded like everything else ---------------------------------------------------------------------------


def test_the_memory_estimate_counts_the_windows_a_request_makes(embed):
    request = validate_request(Request(texts=[LONG, CJK_LONG], options=Options(long_texts="windows")), Limits())
    out = embed(texts=[LONG, CJK_LONG], long_texts="windows")
    assert request.shape.windows + 2 >= len(out.embeddings)  # an upper bound, from characters alone
    plain = estimate(Shape(2, chars=request.shape.chars))
    windowed = estimate(request.shape)
    assert windowed["vectors"] >= len(out.embeddings) * plain["vectors"] // 2
    assert extra_windows([SHORT[0]], Options()) == 0


def test_with_long_texts_set_the_offsets_are_counted_even_when_every_text_fits():
    # Every text of a long_texts request is tokenized with its offsets, whether or not it makes windows.
    from e5.memory_model import OFFSETS_CHAR_BYTES, TOKENIZER_CHAR_BYTES, file_chunk_bytes

    fits = validate_request(Request(texts=SHORT, options=Options(long_texts="mean")), Limits())
    plain = validate_request(Request(texts=SHORT), Limits())
    assert fits.shape.windows == 0 and plain.shape.windows is None and fits.shape.chars == plain.shape.chars
    assert estimate(fits.shape)["tokens"] == fits.shape.chars * (TOKENIZER_CHAR_BYTES + OFFSETS_CHAR_BYTES)
    assert estimate(plain.shape)["tokens"] == plain.shape.chars * TOKENIZER_CHAR_BYTES
    assert file_chunk_bytes(2, 100, "npy", windows=0) - file_chunk_bytes(2, 100, "npy") == 100 * OFFSETS_CHAR_BYTES


def test_a_request_whose_windows_would_pass_the_memory_limit_is_refused_before_work():
    limits = Limits(max_request_mb=50)
    validate_request(Request(texts=[LONG] * 3, options=Options(long_texts="mean")), limits)
    with pytest.raises(InputError, match="E5_MAX_REQUEST_MB"):
        validate_request(Request(texts=[LONG] * 3, options=Options(long_texts="windows")), limits)


def test_long_texts_share_forwards_and_a_short_query_does_not_wait_for_them(predictor, loop):
    """A request of long texts (36 windows) beside a client that sends one short query after another: every
    query is answered while the long request is still under way, and the long one is answered whole."""
    service = predictor.service
    long_request = Request(texts=[LONG, CJK_LONG, LONG + " appendix", CJK_LONG + "。"], options=Options(long_texts="mean"))

    async def scenario():
        whole = asyncio.ensure_future(service.run(long_request))
        await asyncio.sleep(0.05)
        answered_before = 0
        for _ in range(6):
            await service.run(Request(texts=["a short query"]))
            answered_before += not whole.done()
        response, metrics = await whole
        return answered_before, response, metrics

    answered_before, response, metrics = loop.run_until_complete(scenario())
    assert metrics["windows"] >= 16 and len(response.embeddings) == 4
    assert answered_before == 6, answered_before
