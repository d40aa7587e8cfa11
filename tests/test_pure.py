"""Formatting, validation, planning, encodings and ranking: pure functions, no model."""

from __future__ import annotations

import base64
import json
import random
import re

import numpy as np

import pytest
import torch

from e5.batching import best_fit, pack_rows, padding_efficiency, plan_batches, plan_cost, round_up
from e5.encodings import TupleArray, decode_base64, encode_vectors, output_array, vector_fields
from e5.errors import InputError, WeightsError
from e5.instructions import DEFAULT_TASK, PRESETS, format_query, format_texts, near_miss, resolve_task
from e5.model import DeviceProfile, attention_mask_for, average_pool, device_profile, pack_batch, token_limit
from e5.ranking import cosine_scores, rank, ranking, round_scores
from e5.validation import Limits, Options, Request, validate_options, validate_request, validate_texts

LIMITS = Limits()


# --- instructions ---------------------------------------------------------------------------------------


def test_query_format_is_the_model_cards():
    assert format_query("Given a web search query, retrieve relevant passages that answer the query", "how much protein") == (
        "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: how much protein"
    )


def test_documents_are_raw_and_queries_carry_the_instruction():
    assert format_texts(["a b"], "document", "ignored") == ["a b"]
    assert format_texts(["a b"], "query", "Find x") == ["Instruct: Find x\nQuery: a b"]


@pytest.mark.parametrize("name", ["web_search", "nq", "sts", "bitext", "fever"])
def test_required_presets_resolve_to_their_instruction(name):
    assert resolve_task(name) == PRESETS[name].instruction
    assert format_texts(["t"], "query", name) == [f"Instruct: {PRESETS[name].instruction}\nQuery: t"]


def test_unknown_task_is_a_custom_instruction():
    assert resolve_task("Given a recipe, find its cuisine") == "Given a recipe, find its cuisine"
    assert DEFAULT_TASK == PRESETS["web_search"].instruction


@pytest.mark.parametrize("task, meant", [
    ("websearch", "web_search"), ("WEB_SEARCH", "web_search"), ("web-serach", "web_search"), (" Web_Search ", "web_search"),
    ("STS", "sts"), ("emotions", "emotion"), ("hotpot_qa", "hotpotqa"), ("trec-covid", "trec_covid"), ("nqq", "nq"),
])
def test_a_word_that_reads_like_a_preset_is_a_near_miss_naming_it(task, meant):
    assert near_miss(task) == meant
    with pytest.raises(InputError, match=f"did you mean `{meant}`") as refused:
        validate_options(Options(task=task), LIMITS)
    assert refused.value.code == "unknown_preset"


@pytest.mark.parametrize("task", ["web_search", "nq", "Summarize", "classify", "x", DEFAULT_TASK,
                                  "Given a claim, find documents that refute the claim", "web search"])
def test_presets_sentences_and_words_far_from_every_preset_are_no_near_miss(task):
    assert near_miss(task) is None
    assert validate_options(Options(task=task), LIMITS).task == task


def test_a_near_miss_in_a_document_request_is_not_checked_since_documents_carry_no_task():
    assert validate_options(Options(task="websearch", input_type="document"), LIMITS).task == "websearch"


# --- validation -----------------------------------------------------------------------------------------


def test_bare_string_is_one_text():
    assert validate_texts("hello", LIMITS) == ["hello"]


@pytest.mark.parametrize(
    "texts, code, fragment",
    [
        ([], "empty_list", "`texts` is empty"),
        (None, "invalid_type", "`texts` must be a list of strings, got null"),
        (42, "invalid_type", "got int"),
        ({"a": 1}, "invalid_type", "got dict"),
        (["ok", ""], "empty_text", "`texts[1]` is empty or whitespace-only"),
        (["ok", " \n\t\u3000"], "empty_text", "`texts[1]`"),
        (["ok", "fine", 3], "invalid_type", "`texts[2]` must be a string, got int"),
        (["ok", None], "invalid_type", "`texts[1]` must be a string, got null"),
        ([["nested"]], "invalid_type", "`texts[0]` must be a string, got list"),
        (["ok", "bad \ud800 here"], "invalid_unicode", "`texts[1]` is not valid Unicode: lone surrogate U+D800 at position 4"),
    ],
)
def test_bad_texts_name_the_input_and_index(texts, code, fragment):
    with pytest.raises(InputError) as err:
        validate_texts(texts, LIMITS)
    assert err.value.code == code
    assert fragment in str(err.value)


def test_limits_name_the_limit_and_the_value():
    limits = Limits(max_texts=2, max_chars_per_text=10, max_chars_per_request=15)
    with pytest.raises(InputError, match=r"`texts` has 3 texts; the limit is 2"):
        validate_texts(["a", "b", "c"], limits)
    with pytest.raises(InputError, match=r"`texts\[1\]` has 11 characters; the limit is 10"):
        validate_texts(["a", "x" * 11], limits)
    request = Request(texts=["x" * 9, "y" * 9], options=Options(input_type="document"))
    with pytest.raises(InputError, match=r"the request has 18 characters in all .*; the limit is 15") as err:
        validate_request(request, limits)
    assert err.value.code == "request_too_large"


def test_limits_come_from_the_environment():
    limits = Limits.from_env({"E5_MAX_TEXTS": "7", "E5_MAX_TEXT_CHARS": "99"})
    assert (limits.max_texts, limits.max_chars_per_text) == (7, 99)
    with pytest.raises(ValueError, match="E5_MAX_TEXTS must be a whole number"):
        Limits.from_env({"E5_MAX_TEXTS": "many"})
    with pytest.raises(ValueError, match="E5_MAX_TEXTS must be at least 1"):
        Limits.from_env({"E5_MAX_TEXTS": "0"})
    assert Limits.from_env({"E5_MAX_TEXTS": " "}).max_texts == Limits().max_texts  # empty means unset


def test_env_number_parses_or_names_the_variable():
    from e5.settings import env_number

    assert env_number({"N": " 12 "}, "N") == 12
    assert env_number({"N": "2.5"}, "N", float, minimum=0) == 2.5
    assert env_number({}, "N") is None and env_number({"N": ""}, "N") is None
    with pytest.raises(ValueError, match="N must be a whole number, got '2.5'"):
        env_number({"N": "2.5"}, "N")
    with pytest.raises(ValueError, match="N must be a number, got 'x'"):
        env_number({"N": "x"}, "N", float)
    for bad in ("0", "-1"):
        with pytest.raises(ValueError, match="N must be at least 1"):
            env_number({"N": bad}, "N")
    with pytest.raises(ValueError, match="N must be at least 0"):
        env_number({"N": "nan"}, "N", float, minimum=0)


def test_the_task_is_checked_for_queries_and_not_used_for_documents():
    with pytest.raises(InputError, match="`task` is empty") as err:
        validate_options(Options(task="  "), LIMITS)
    assert err.value.code == "empty_task"
    with pytest.raises(InputError, match="`task` has 2001 characters; the limit is 2000") as err:
        validate_options(Options(task="x" * 2001), LIMITS)
    assert err.value.code == "task_too_long"
    for unused in ("", "x" * 2001):
        assert validate_options(Options(task=unused, input_type="document"), LIMITS).task == unused


# --- batching -------------------------------------------------------------------------------------------


def test_plan_covers_every_index_once_within_budget():
    rng = random.Random(0)
    lengths = [rng.choice([3, 10, 40, 200, 512]) for _ in range(300)]
    plan = plan_batches(lengths, token_budget=2048, multiple_of=8)
    assert sorted(i for b in plan for i in b) == list(range(300))
    for batch in plan:
        width = -(-max(lengths[i] for i in batch) // 8) * 8
        assert len(batch) * width <= 2048
        assert lengths[batch[0]] == max(lengths[i] for i in batch)  # longest first within the batch


def test_plan_puts_short_texts_in_big_batches_and_long_in_small():
    plan = plan_batches([500] * 4 + [10] * 100, token_budget=1000)
    assert [len(b) for b in plan] == [2, 2, 100]


def test_a_sequence_over_budget_gets_its_own_batch():
    assert plan_batches([600, 5, 5], token_budget=512) == [[0], [1, 2]]


def test_sorted_plan_pads_less_than_arrival_order():
    rng = random.Random(1)
    lengths = [rng.randint(5, 512) for _ in range(256)]
    sorted_eff = padding_efficiency(lengths, plan_batches(lengths, 32 * 512, forward_cost=32))
    naive = [list(range(i, min(i + 32, 256))) for i in range(0, 256, 32)]
    assert sorted_eff > 0.9 > 0.7 > padding_efficiency(lengths, naive)


def plan_total(lengths, plan, multiple_of, forward_cost):
    return sum(plan_cost(round_up(max(lengths[i] for i in b), multiple_of), len(b), forward_cost) for b in plan)


def cheapest_possible(lengths, token_budget, multiple_of, forward_cost):
    """Every contiguous cut of the sorted lengths tried: the true minimum the planner approximates."""
    widths = sorted((round_up(n, multiple_of) for n in lengths), reverse=True)
    best = [0.0] + [float("inf")] * len(widths)
    for i, w in enumerate(widths):
        for j in range(i + 1, min(len(widths), i + max(1, token_budget // w)) + 1):
            best[j] = min(best[j], best[i] + plan_cost(w, j - i, forward_cost))
    return best[-1]


def test_plan_cost_is_within_1_percent_of_the_cheapest_plan():
    rng = random.Random(2)
    for _ in range(500):
        lengths = [rng.choice([rng.randint(1, 40), rng.randint(1, 600)]) for _ in range(rng.randint(1, 40))]
        budget, multiple, cost = rng.choice([16, 256, 1000, 2048]), rng.choice([1, 8]), rng.choice([0, 32, 512])
        plan = plan_batches(lengths, budget, multiple, cost)
        assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
        assert all(len(b) == 1 or len(b) * round_up(max(lengths[i] for i in b), multiple) <= budget for b in plan)
        assert plan_total(lengths, plan, multiple, cost) <= 1.01 * cheapest_possible(lengths, budget, multiple, cost)


def test_without_a_forward_cost_every_length_drop_is_a_cut():
    lengths = [100, 95, 91, 89, 50, 46, 10]
    assert plan_batches(lengths, token_budget=10_000) == [[0], [1], [2], [3], [4], [5], [6]]


def test_a_forward_cost_keeps_a_handful_of_queries_together():
    # 8 concurrent queries of 33-40 tokens: any cut saves at most 16 pad tokens, less than a forward
    # costs, so they stay in one batch; a long document still goes alone.
    lengths = list(range(40, 32, -1)) + [500]
    assert sorted(len(b) for b in plan_batches(lengths, token_budget=2048, forward_cost=32)) == [1, 8]
    assert len(plan_batches(lengths, token_budget=2048, forward_cost=0)) == 9


def test_plan_covers_10000_texts_of_every_length():
    rng = random.Random(3)
    lengths = [rng.randint(3, 512) for _ in range(10_000)]
    plan = plan_batches(lengths, token_budget=2048, forward_cost=32)
    assert sorted(i for b in plan for i in b) == list(range(10_000))


# --- packing short texts into rows ----------------------------------------------------------------------


def test_pack_rows_finds_few_rows_then_evens_them_and_leaves_long_texts_alone():
    # Best fit at 128 needs two rows for the short texts: [100, 28] and [40, 30, 26, 12]. The narrowest row
    # size that still needs only two is 124: [40, 30, 28, 26] and [100, 12]. The 300-token text rows alone.
    assert pack_rows([30, 26, 40, 28, 100, 300, 12], row_tokens=128) == [[5], [2, 0, 3, 1], [4, 6]]


def test_best_fit_puts_each_text_in_the_fullest_row_with_room():
    # 100 opens a row and 40 another; 30 joins the 40 (58 free); 28 fills the 100's row; 26 and 12 join the 40.
    assert best_fit([30, 26, 40, 28, 100, 12], [4, 2, 0, 3, 1, 5], 128) == [[4, 3], [2, 0, 1, 5]]


def test_pack_rows_zero_is_one_text_per_row_longest_first():
    assert pack_rows([30, 26, 40], row_tokens=0) == [[2], [0], [1]]
    assert pack_rows([], row_tokens=128) == []


def test_pack_rows_covers_every_text_once_within_the_row_size():
    rng = random.Random(4)
    for _ in range(300):
        lengths = [rng.choice([rng.randint(1, 40), rng.randint(1, 512)]) for _ in range(rng.randint(1, 60))]
        cap = rng.choice([0, 16, 128, 512])
        rows = pack_rows(lengths, cap)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        used = [sum(lengths[i] for i in row) for row in rows]
        assert all(len(row) == 1 or u <= cap for row, u in zip(rows, used))
        assert used == sorted(used, reverse=True)
        if cap:  # no more rows than best fit at the full row size, and no two rows that could have been one
            short = [i for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]) if lengths[i] < cap]
            assert sum(1 for row in rows if lengths[row[0]] < cap) <= len(best_fit(lengths, short, cap))
            small = sorted(u for row, u in zip(rows, used) if u <= cap)
            assert len(small) < 2 or small[0] + small[1] > cap


def test_pack_batch_lays_texts_end_to_end_each_numbered_from_its_start():
    sequences = [[0, 7, 2], [0, 8, 9, 2], [0, 2]]
    batch = pack_batch(sequences, [[1, 2], [0]], pad_id=1)
    assert batch.input_ids.tolist() == [[0, 8, 9, 2, 0, 2], [0, 7, 2, 1, 1, 1]]
    assert batch.position_ids.tolist() == [[2, 3, 4, 5, 2, 3], [2, 3, 4, 1, 1, 1]]  # XLM-R: pad_id + 1 onwards
    mask = batch.attention_mask[:, 0]
    assert mask.shape == (2, 6, 6)
    assert mask[0, 0].tolist() == [True] * 4 + [False] * 2  # a token of text 1 sees text 1 only
    assert mask[0, 4].tolist() == [False] * 4 + [True] * 2
    assert mask[1, 0].tolist() == [True] * 3 + [False] * 3
    assert mask[1, 5].tolist() == [False] * 3 + [True] * 3  # padding sees padding: no empty softmax row
    # Each text's tokens, gathered back from the rows, are the text itself.
    gathered = batch.input_ids[batch.token_rows, batch.token_columns] * batch.token_mask
    assert gathered.tolist() == [[0, 7, 2, 0], [0, 8, 9, 2], [0, 2, 0, 0]]


def test_one_text_per_row_is_the_plain_padding_mask():
    batch = pack_batch([[0, 7, 7, 2], [0, 2]], [[0], [1]], pad_id=1, multiple_of=8)
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]]
    assert batch.token_rows is None and torch.equal(batch.token_mask, batch.attention_mask)
    assert attention_mask_for(torch.tensor([[3, 3, -1], [0, 0, 0]])).dim() == 2
    assert attention_mask_for(torch.tensor([[3, 0, -1]])).dim() == 4


# --- device profiles (the CUDA branch, computed on CPU) -------------------------------------------------


def test_cuda_profile_is_fp16_padded_to_8_with_a_memory_budget():
    p = device_profile("cuda", free_bytes=40 * 2**30, environ={})
    assert (p.dtype, p.pad_multiple) == (torch.float16, 8)
    assert 512 <= p.token_budget <= 65536
    small = device_profile("cuda", free_bytes=2 * 2**30, environ={})
    assert small.token_budget < p.token_budget


def test_cpu_profile_is_fp32_and_the_budget_can_be_set():
    assert device_profile("cpu", environ={}) == DeviceProfile("cpu", torch.float32, 1, 2040, 64, 128)
    assert device_profile("cpu", environ={"E5_TOKEN_BUDGET": "1000"}).token_budget == 1000
    assert device_profile("cpu", environ={"E5_FORWARD_COST": "0"}).forward_cost == 0
    assert device_profile("cuda", free_bytes=2**34, environ={"E5_FORWARD_COST": "900"}).forward_cost == 900
    with pytest.raises(WeightsError, match="E5_FORWARD_COST must be a whole number"):
        device_profile("cpu", environ={"E5_FORWARD_COST": "lots"})
    assert device_profile("cpu", environ={"E5_ROW_TOKENS": "0"}).row_tokens == 0
    assert device_profile("cuda", free_bytes=2**34, environ={}).row_tokens == 0
    with pytest.raises(WeightsError, match="E5_ROW_TOKENS must be at least 0"):
        device_profile("cpu", environ={"E5_ROW_TOKENS": "-1"})
    with pytest.raises(WeightsError, match="E5_TOKEN_BUDGET must be a whole number"):
        device_profile("cpu", environ={"E5_TOKEN_BUDGET": "lots"})


def test_token_limit_comes_from_the_config():
    class Config:
        max_position_embeddings = 514
        pad_token_id = 1

    assert token_limit(Config) == 512


def test_average_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(average_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))


# --- encodings and ranking ------------------------------------------------------------------------------


@pytest.fixture
def unit_vectors():
    v = np.random.default_rng(0).standard_normal((3, 1024)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_base64_round_trips_little_endian_float32(unit_vectors):
    encoded = encode_vectors(unit_vectors, "base64")
    assert np.array_equal(decode_base64(encoded[1]), unit_vectors[1])
    assert len(base64.b64decode(encoded[0])) == 4096


def test_int8_uses_the_fixed_scale(unit_vectors):
    q = np.array(encode_vectors(unit_vectors, "int8"))
    assert q.dtype.kind == "i" and q.min() >= -127 and q.max() <= 127
    assert np.abs(q / 127.0 - unit_vectors).max() <= 0.5 / 127 + 1e-7


def test_binary_packs_sign_bits_like_numpy(unit_vectors):
    b = np.array(encode_vectors(unit_vectors, "binary"), dtype=np.uint8)
    assert b.shape == (3, 128)
    assert np.array_equal(np.unpackbits(b, axis=1).astype(bool), unit_vectors > 0)


def test_ranking_is_best_first_and_cut_to_top_k():
    q = np.array([[1.0, 0.0], [0.0, 2.0]])
    d = np.array([[0.0, 1.0], [1.0, 0.1], [1.0, 1.0]])
    scores = cosine_scores(q, d)
    assert np.allclose(np.diag(cosine_scores(d, d)), 1.0)
    assert rank(scores).tolist() == [[1, 2, 0], [0, 2, 1]]
    assert rank(scores, top_k=1).tolist() == [[1], [0]]


def test_a_ranking_entry_is_the_document_index_and_its_score_rounded_like_the_vectors():
    scores = np.array([[0.25, 0.9618099927902222, 0.5], [0.7, 0.1, 0.7]], dtype=np.float32)
    ranked = ranking(scores)
    assert [[e["index"] for e in row] for row in ranked] == [[1, 2, 0], [0, 2, 1]]  # ties keep document order
    assert ranked[0][0] == {"index": 1, "score": 0.96180999}  # not float32's 0.9618099927902222
    assert all(type(e["index"]) is int and type(e["score"]) is float for row in ranked for e in row)
    assert ranking(scores, top_k=2)[1] == [{"index": 0, "score": 0.69999999}, {"index": 2, "score": 0.69999999}]
    assert ranking(scores, top_k=5) == ranked  # top_k past the documents keeps them all
    assert round_scores(scores).dtype == np.float64 and json.dumps(round_scores(scores).tolist()[0][1]) == "0.96180999"


@pytest.mark.parametrize("fmt", ["float", "int8", "binary", "base64"])
def test_vectors_fill_the_numbers_field_or_the_base64_field(unit_vectors, fmt):
    numbers, strings = vector_fields(unit_vectors, fmt)
    if fmt == "base64":
        assert numbers == [] and strings == encode_vectors(unit_vectors, "base64")
    else:
        assert strings is None and isinstance(numbers, TupleArray)
        assert np.array_equal(np.asarray(numbers), np.asarray(encode_vectors(unit_vectors, fmt)))


def test_output_arrays_serialize_to_the_same_json_as_plain_lists():
    import copy
    import dataclasses
    import json

    rng = np.random.default_rng(0)
    for array in (rng.random((3, 5)), rng.integers(-127, 128, (2, 4), dtype=np.int8), np.arange(4), np.zeros((0, 3)), np.float64(0.5)):
        out = output_array(np.asarray(array))
        assert isinstance(out, TupleArray)
        assert json.dumps(out.tolist()) == json.dumps(np.asarray(array).tolist())
        assert not isinstance(out.tolist(), list)  # tuples all the way down: Cog's encoder does not walk them
    # Cog's encoder takes a dataclass apart with dataclasses.asdict, which deep-copies arrays: the type survives
    @dataclasses.dataclass
    class Holder:
        embeddings: object

    copied = dataclasses.asdict(Holder(output_array(rng.random((2, 3)))))["embeddings"]
    assert isinstance(copied, TupleArray) and isinstance(copied.tolist()[0], tuple)
    assert output_array(["c3RyaW5ncw=="]) == ["c3RyaW5ncw=="]  # base64 strings pass as they are
    assert isinstance(copy.deepcopy(output_array(np.ones(2))), TupleArray)


@pytest.mark.parametrize("bad", [True, False, 0, -1, 1.5, "2", 0.0, 10_001])
def test_top_k_must_be_a_whole_number_of_at_least_one(bad):
    from e5.validation import validate_top_k

    with pytest.raises(InputError, match="`top_k` must be a whole number of at least 1") as err:
        validate_top_k(bad)
    assert err.value.code == "invalid_top_k"
    assert validate_top_k(1) == 1 and validate_top_k(None) is None


# --- what a form sends (e5/form.py) ---------------------------------------------------------------------


def test_the_text_box_is_one_text_per_line():
    from e5.form import texts_from_box

    assert texts_from_box("how much protein\n南瓜的家常做法\n") == ["how much protein", "南瓜的家常做法"]
    assert texts_from_box("one\r\n\n   \ntwo") == ["one", "two"]  # Windows line ends; blank lines skipped
    assert texts_from_box("  a sentence with  spaces ") == ["  a sentence with  spaces "]  # a line as typed
    assert texts_from_box("") is None and texts_from_box(" \n ") is None and texts_from_box(None) is None


def test_the_box_numbers_lines_as_a_person_reads_them():
    from e5.form import lines_from_box

    assert lines_from_box("one\r\n\n   \ntwo\rthree\n") == [(1, "one"), (4, "two"), (5, "three")]
    assert lines_from_box("") == [] and lines_from_box(None) == []


@pytest.mark.parametrize(
    "inputs, fragment",
    [
        ({"texts": ["a"], "text": "b"}, "give `text` or `texts`, not both"),
        ({"text": "b", "texts_file": "f.txt"}, "give `text` or `texts_file`, not both"),
        ({"texts": ["a"], "documents": ["d"], "document": "e"}, "give `document` or `documents`, not both"),
    ],
)
def test_form_mistakes_name_the_way_out(inputs, fragment):
    from e5.form import read_form

    inputs = {"text": "", "texts": [], "document": "", "documents": [], "top_k": 0, "texts_file": None} | inputs
    with pytest.raises(InputError) as err:
        read_form(**inputs)
    assert fragment in str(err.value) and err.value.code == "conflicting_inputs"


def test_what_an_untouched_form_sends_means_not_given():
    from e5.form import given, given_number, read_form

    # The defaults a ticked but untouched box sends: none of them is a value, so none is an error.
    assert [given(v) for v in ([], (), "", None)] == [None] * 4 and [given_number(v) for v in (0, 0.0, None)] == [None] * 3
    assert given(["a"]) == ["a"] and given(0) == 0 and given(False) is False  # a wrong type is the engine's to refuse
    assert given_number(False) is False and given_number(3) == 3 and given_number(-1) == -1
    form = read_form("", [], "", [], 0, None)
    assert (form.texts, form.documents, form.top_k, form.lines) == (None, None, None, {})


def test_nothing_to_embed_names_every_way_to_give_texts():
    from e5.form import read_form
    from e5.validation import Limits, Request, validate_request

    assert read_form("", None, "", None, None).texts is None  # the form passes it on; the engine's check answers
    with pytest.raises(InputError) as err:
        validate_request(Request(texts=None), Limits())
    assert "`texts` is required: give `texts` (a list of strings), `text` (one text per line) or `texts_file`" \
        in str(err.value) and err.value.code == "missing_texts"


def test_form_texts_come_from_the_boxes_or_the_lists():
    from e5.form import read_form

    form = read_form("a\n\nb", None, "d1\n d2 \n", None, 2)
    assert (form.texts, form.documents, form.top_k) == (["a", "b"], ["d1", " d2 "], 2)
    assert form.lines == {"texts": [1, 3], "documents": [1, 2]}
    assert read_form("", ["a"], "  \n", ["d"], 0).texts == ["a"]
    assert read_form("", None, "", None, None, "f.txt").texts is None  # a bulk job: the file is the texts
    assert read_form("", ["a"], "", None, None, "f.txt").texts == ["a"]  # texts with texts_file: the engine refuses


def test_an_error_about_a_typed_text_names_its_line():
    from e5.form import read_form
    from e5.validation import Limits, Request, validate_request

    form = read_form("fine\n\n\n" + "x" * 30 + "\n", None, "d\n\n\ud800", None, 0)
    limits = Limits(max_chars_per_text=20)
    with pytest.raises(InputError) as err, form.naming_lines():
        validate_request(Request(form.texts, form.documents), limits)
    assert str(err.value).startswith("`text` line 4 has 30 characters") and err.value.code == "text_too_long"
    with pytest.raises(InputError) as err, form.naming_lines():
        validate_request(Request(["ok"], form.documents), Limits())
    assert str(err.value).startswith("`document` line 3 is not valid Unicode") and err.value.item is None
    listed = read_form("", ["ok", " "], "", None, 0)
    with pytest.raises(InputError) as err, listed.naming_lines():  # an item of a list keeps its index
        validate_request(Request(listed.texts), Limits())
    assert str(err.value).startswith("`texts[1]` is empty")


def test_a_whole_number_float_is_a_top_k_and_nothing_else_is():
    from e5.validation import validate_top_k

    assert validate_top_k(2.0) == 2 and type(validate_top_k(2.0)) is int
    for value in (2.5, float("inf"), float("nan"), 1e30, -2.0):
        with pytest.raises(InputError, match=re.escape(f"got {value!r}") + "$"):
            validate_top_k(value)
