"""Property tests over predict()'s inputs: any Unicode, any length, odd types.

Each input gets exactly the answer it deserves, worked out here apart from the code under test: vectors of
the right shape for a valid request, or the InputError (code, input and index) of its first fault. A test that
accepted any error naming `texts` would pass even if every input were refused.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e5 import InputError
from e5.validation import Limits

LIMITS = Limits()

# Every code point, surrogates and control characters included, weighted toward the awkward ones.
awkward = st.sampled_from(["\u0000", "\u200b", "\u200d", "\u202e", "\u2066", "\ufeff", "\u0301", "\ud800", "\U0001F600",
                           "\U0001F469\u200d\U0001F52C", "\t", "\r\n", "\u3000", "\u0627\u0644", "\uffff", " "])
any_char = st.characters(blacklist_categories=())
text = st.lists(st.one_of(any_char, awkward), max_size=300).map("".join)
odd = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(), st.lists(st.text(max_size=3), max_size=2),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
texts = st.one_of(text, st.lists(st.one_of(text, text, text, odd), max_size=6), odd)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def text_fault(value, label: str) -> tuple[str, str] | None:
    """(code, label) of what is wrong with one text, or None."""
    if not isinstance(value, str):
        return "invalid_type", label
    if not value.strip():
        return "empty_text", label
    if len(value) > LIMITS.max_chars_per_text:
        return "text_too_long", label
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        return "invalid_unicode", label
    return None


def list_fault(value, name: str) -> tuple[str, str] | None:
    """The first fault of a `texts`-like input: the container, then each item in order."""
    if isinstance(value, str):
        value = [value]  # a direct call may pass one string (the image's schema refuses it first)
    if not isinstance(value, list):
        return "invalid_type", f"`{name}`"
    if not value:
        return "empty_list", f"`{name}`"
    for i, item in enumerate(value):
        fault = text_fault(item, f"`{name}[{i}]`")
        if fault:
            return fault
    return None


def task_fault(value) -> tuple[str, str] | None:
    if not isinstance(value, str):
        return "invalid_type", "`task`"
    if not value.strip():
        return "empty_task", "`task`"
    if len(value) > LIMITS.max_task_chars:
        return "task_too_long", "`task`"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        return "invalid_unicode", "`task`"
    return None


def check(call, fault, n: int | None):
    """The call raises exactly `fault` (code, and the label its message starts with), or returns n vectors."""
    if fault is not None:
        with pytest.raises(InputError) as err:
            call()
        code, label = fault
        assert (err.value.code, str(err.value).split(" ")[0]) == (code, label), str(err.value)
        return None
    out = call()
    vectors = np.asarray(out.embeddings, dtype=np.float32)
    assert vectors.shape == (n, 1024) and np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert len(out.token_counts) == n and all(1 < c <= 512 for c in out.token_counts)
    return out


def sent(value):
    """What predict() reads from a list input: [] and "" are what a form's untouched box sends, so none."""
    return None if isinstance(value, (list, tuple, str)) and len(value) == 0 else value


def count(value) -> int:
    return 1 if isinstance(value, str) else len(value)


@SETTINGS
@given(texts=texts, input_type=st.sampled_from(["query", "document"]))
def test_any_texts_give_vectors_or_the_error_of_their_first_fault(embed, texts, input_type):
    fault = list_fault(texts, "texts") if sent(texts) is not None else ("missing_texts", "`texts`")
    check(lambda: embed(texts=texts, input_type=input_type), fault, None if fault else count(texts))


@SETTINGS
@given(task=st.one_of(text, odd, st.sampled_from(["nq", "sts", "x" * 2001])))
def test_any_task_gives_vectors_or_the_error_of_its_fault(embed, task):
    check(lambda: embed(texts=["hello"], task=task), task_fault(task), 1)


@SETTINGS
@given(task=st.one_of(text, odd))
def test_the_task_of_documents_is_not_used(embed, task):
    check(lambda: embed(texts=["hello"], task=task, input_type="document"), None, 1)


@SETTINGS
@given(documents=texts)
def test_any_documents_give_scores_or_the_error_of_their_first_fault(embed, documents):
    fault = list_fault(documents, "documents") if sent(documents) is not None else None
    out = check(lambda: embed(texts=["hello"], documents=documents), fault, None if fault else 1)
    if out is None:
        return
    if sent(documents) is None:  # no documents: no ranking
        assert out.scores is None and out.ranking is None
        return
    n = count(documents)
    assert np.asarray(out.scores).shape == (1, n)
    assert sorted(e["index"] for e in out.ranking[0]) == list(range(n))


def test_the_strategies_reach_every_outcome(embed):
    """The generators above produce valid inputs and each kind of fault, so the properties are not vacuous."""
    seen = set()

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(texts=texts)
    def sample(texts):
        fault = list_fault(texts, "texts") if sent(texts) is not None else ("missing_texts", "`texts`")
        seen.add(fault[0] if fault else "valid")

    sample()
    assert {"valid", "invalid_type", "missing_texts", "empty_text", "invalid_unicode"} <= seen, seen
