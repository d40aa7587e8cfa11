"""Property tests over predict()'s inputs: any Unicode, any length, odd types.

Every case ends in vectors of the right shape or in an InputError that names the input: never another
exception, a hang or a wrong-shaped answer.
"""

from __future__ import annotations

import re

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e5 import InputError

# Every code point, surrogates and control characters included, weighted toward the awkward ones.
awkward = st.sampled_from(["\u0000", "\u200b", "\u200d", "\u202e", "\u2066", "\ufeff", "\u0301", "\ud800", "\U0001F600",
                           "\U0001F469\u200d\U0001F52C", "\t", "\r\n", "\u3000", "\u0627\u0644", "\uffff"])
any_char = st.characters(blacklist_categories=())
text = st.lists(st.one_of(any_char, awkward), max_size=300).map("".join)
odd = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(), st.lists(st.text(max_size=3), max_size=2),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
texts = st.one_of(text, st.lists(st.one_of(text, text, text, odd), max_size=6), odd)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def check_outcome(call, texts_value, name="texts"):
    if isinstance(texts_value, str):
        texts_value = [texts_value]  # a bare string is one text
    try:
        out = call()
    except InputError as err:
        message = str(err)
        assert f"`{name}" in message or "`task`" in message, message
        index = re.search(rf"`{name}\[(\d+)\]`", message)
        if index:
            assert isinstance(texts_value, list) and int(index.group(1)) < len(texts_value)
        return None
    n = len(texts_value)
    vectors = np.asarray(out.embeddings, dtype=np.float32)
    assert vectors.shape == (n, 1024)
    assert np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert len(out.token_counts) == n and all(1 < c <= 512 for c in out.token_counts)
    return out


@SETTINGS
@given(texts=texts, input_type=st.sampled_from(["query", "document"]))
def test_any_texts_give_vectors_or_a_named_error(embed, texts, input_type):
    check_outcome(lambda: embed(texts=texts, input_type=input_type), texts)


@SETTINGS
@given(task=st.one_of(text, odd))
def test_any_task_gives_vectors_or_a_named_error(embed, task):
    check_outcome(lambda: embed(texts=["hello"], task=task), ["hello"])


@SETTINGS
@given(documents=texts)
def test_any_documents_give_scores_or_a_named_error(embed, documents):
    try:
        out = embed(texts=["hello"], documents=documents)
    except InputError as err:
        assert "`documents" in str(err), str(err)
        return
    if documents is None:  # no documents: no ranking
        assert out.scores is None and out.ranking is None
        return
    n = 1 if isinstance(documents, str) else len(documents)
    assert np.asarray(out.scores).shape == (1, n)
    assert sorted(out.ranking[0]) == list(range(n))
