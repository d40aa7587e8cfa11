"""Loading the checkpoint: every broken weights directory fails setup with a message that says what to do."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from e5 import WeightsError
from e5.model import DeviceProfile, load_checkpoint

CPU = DeviceProfile("cpu", __import__("torch").float32, 1, 2048, 32)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def broken(checkpoint_dir, tmp_path):
    """A fresh copy of the good checkpoint to damage."""
    target = tmp_path / "weights"
    shutil.copytree(checkpoint_dir, target)
    return target


def test_missing_directory_names_it_and_the_command_that_fills_that_folder(tmp_path):
    with pytest.raises(WeightsError, match=re.escape(f"does not exist; fill it with `python scripts/download_weights.py --dest {tmp_path / 'nowhere'}`")):
        load_checkpoint(tmp_path / "nowhere", CPU)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
def test_missing_file_is_named(broken, name):
    (broken / name).unlink()
    with pytest.raises(WeightsError, match=rf"incomplete: missing {name}; fill it with"):
        load_checkpoint(broken, CPU)


def test_truncated_safetensors_is_reported(broken):
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match=r"model.safetensors could not be loaded .*truncated"):
        load_checkpoint(broken, CPU)


def test_pickle_weights_are_never_loaded(broken):
    (broken / "model.safetensors").rename(broken / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="missing model.safetensors"):
        load_checkpoint(broken, CPU)


def test_another_architecture_is_refused(broken):
    config = json.loads((broken / "config.json").read_text())
    config["model_type"] = "bert"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError):
        load_checkpoint(broken, CPU)


def test_wrong_width_is_refused(broken):
    config = json.loads((broken / "config.json").read_text())
    config["hidden_size"] = 768
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="768-wide model; multilingual-e5-large-instruct is 1024-wide"):
        load_checkpoint(broken, CPU)


def test_a_width_asked_for_must_be_the_checkpoints(checkpoint_dir, monkeypatch):
    from e5 import Embedder

    with pytest.raises(WeightsError, match="1024-wide model; E5_DIMENSIONS asks for 384"):
        load_checkpoint(checkpoint_dir, CPU, dimensions=384)
    monkeypatch.setenv("E5_DIMENSIONS", "384")  # read by Embedder.load, as the predictor's setup calls it
    with pytest.raises(WeightsError, match="E5_DIMENSIONS asks for 384"):
        Embedder.load(checkpoint_dir, device="cpu")


@pytest.mark.parametrize("value, expected", [("", 1024), ("384", 384), ("1024", 1024)])
def test_the_width_setting_defaults_to_the_large_model(value, expected):
    from e5.model import expected_dimensions

    assert expected_dimensions({"E5_DIMENSIONS": value}) == expected
    assert expected_dimensions({}) == 1024


@pytest.mark.parametrize("value, message", [("wide", "E5_DIMENSIONS must be a whole number, got 'wide'"),
                                            ("0", "E5_DIMENSIONS must be at least 1, got '0'")])
def test_a_bad_width_setting_stops_setup_naming_it(value, message):
    from e5.model import expected_dimensions

    with pytest.raises(WeightsError, match=message):
        expected_dimensions({"E5_DIMENSIONS": value})


def test_tensors_missing_from_the_file_are_refused(broken):
    from safetensors.torch import load_file, save_file

    tensors = load_file(broken / "model.safetensors")
    del tensors["encoder.layer.1.output.dense.weight"]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"lacks 1 tensors .*encoder.layer.1.output.dense.weight"):
        load_checkpoint(broken, CPU)


def test_predictor_setup_fails_on_missing_weights(tmp_path, monkeypatch):
    from predict import Predictor

    monkeypatch.setenv("E5_WEIGHTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match=str(tmp_path / "empty")):
        asyncio.run(Predictor().setup())


def real_weights_dir() -> Path | None:
    weights = ROOT / "weights"
    try:
        config = json.loads((weights / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if config.get("num_hidden_layers") == 24 and config.get("vocab_size") == 250002 and (weights / "model.safetensors").is_file():
        return weights
    return None


@pytest.mark.real_weights
@pytest.mark.skipif(real_weights_dir() is None, reason="weights/ does not hold the real checkpoint (run scripts/download_weights.py)")
def test_real_weights_reproduce_the_model_card_scores(monkeypatch):
    from predict import Predictor
    from conftest import DEFAULTS

    monkeypatch.setenv("E5_WEIGHTS_DIR", str(real_weights_dir()))
    monkeypatch.setenv("E5_DEVICE", "cpu")

    async def run():
        p = Predictor()
        await p.setup()
        return await p.predict(**{**DEFAULTS,
            "texts": ["how much protein should a female eat", "南瓜的家常做法"],
            "documents": [
                "As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 grams per day. But, as you can see from this chart, you'll need to increase that if you're expecting or training for a marathon. Check out the chart below to see how much protein you should be eating each day.",
                "1.清炒南瓜丝 原料:嫩南瓜半个 调料:葱、盐、白糖、鸡精 做法: 1、南瓜用刀薄薄的削去表面一层皮,用勺子刮去瓤 2、擦成细丝(没有擦菜板就用刀慢慢切成细丝) 3、锅烧热放油,入葱花煸出香味 4、入南瓜丝快速翻炒一分钟左右,放盐、一点白糖和鸡精调味出锅 2.香葱炒南瓜 原料:南瓜1只 调料:香葱、蒜末、橄榄油、盐 做法: 1、将南瓜去皮,切成片 2、油锅8成热后,将蒜末放入爆香 3、爆香后,将南瓜片放入,翻炒 4、在翻炒的同时,可以不时地往锅里加水,但不要太多 5、放入盐,炒匀 6、南瓜差不多软和绵了之后,就可以关火 7、撒入香葱,即可出锅",
            ],
        })

    out = asyncio.run(run())
    scores = np.array(out.scores) * 100
    assert np.abs(scores - np.array([[91.93, 67.58], [70.38, 92.13]])).max() < 0.01 + 1e-6
