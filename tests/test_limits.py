"""Bounded work per request: huge inputs are refused before tokenization, inputs at the limit are served."""

from __future__ import annotations

import pytest

from e5 import InputError


def test_a_multi_megabyte_text_is_refused_by_its_size(embed):
    with pytest.raises(InputError, match=r"`texts\[1\]` has 5000000 characters; the limit is 100000"):
        embed(texts=["fine", "x" * 5_000_000])


def test_a_text_at_the_character_limit_is_embedded_truncated(embed):
    out = embed(texts=["protein " * 12_500], input_type="document")  # 100,000 characters
    assert out.truncated == [True] and out.token_counts == [512]


def test_a_request_at_the_total_limit_is_served(embed):
    texts = [("南瓜 protein der " * 7_000)[:100_000]] * 40  # 40 x 100,000 characters = the 4,000,000 limit
    out = embed(texts=texts, input_type="document")
    assert len(out.embeddings) == 40 and all(out.truncated)
    with pytest.raises(InputError, match=r"the request has 4000008 characters in all .*the limit is 4000000"):
        embed(texts=texts + ["one more"], input_type="document")


def test_the_request_limit_counts_documents_and_the_task_on_each_query(embed, predictor, monkeypatch):
    from e5.instructions import PRESETS
    from e5.validation import Limits

    task = PRESETS["nq"].instruction  # what the preset name `nq` puts in front of each query
    monkeypatch.setattr(predictor.service, "limits", Limits(max_chars_per_request=2 * (5 + len(task)) + 4))
    embed(texts=["abcde", "fghij"], task="nq", documents=["wxyz"])  # exactly at the limit
    with pytest.raises(InputError, match=rf"has {2 * (5 + len(task)) + 5} characters in all"):
        embed(texts=["abcde", "fghij"], task="nq", documents=["vwxyz"])  # one document character more
    with pytest.raises(InputError, match="characters in all"):
        embed(texts=["abcde", "fghijk"], task="nq", documents=["wxyz"])  # one query character more
    # documents alone carry no task
    embed(texts=["abcde", "fghij", "x" * (2 * len(task) + 4)], input_type="document")
