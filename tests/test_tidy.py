"""Memory and files handed back when they are no longer needed: after refused and failed requests too, and
as requests end under load (not only when the container idles)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from e5 import InputError


def test_a_refused_request_hands_its_memory_back_once_idle(predictor, loop, monkeypatch):
    """No forward runs for a refusal, and the trim used to follow only forwards."""
    from conftest import DEFAULTS

    embed = lambda **kw: loop.run_until_complete(predictor.predict(**{**DEFAULTS, **kw}))
    embed(texts=["warm"])
    loop.run_until_complete(asyncio.sleep(1.5))  # the forward's own trim is done
    trims = []
    monkeypatch.setattr("e5.service.return_freed_memory", lambda: trims.append(1))
    with pytest.raises(InputError):
        embed(texts=["ok", "   "])
    loop.run_until_complete(asyncio.sleep(1.5))  # the batcher's idle delay is 1 s
    assert trims == [1]


def test_spill_files_are_swept_as_requests_end_also_under_load(predictor, loop, tmp_path, monkeypatch):
    from conftest import DEFAULTS
    from e5.bulk import SPILL_MIN_AGE_S
    from e5.service import SWEEP_INTERVAL_S

    spills = tmp_path / "predictions"
    old = spills / "pred-1" / "outputs" / "spill_a.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    os.utime(old, (time.time() - SPILL_MIN_AGE_S - 1,) * 2)
    monkeypatch.setattr("e5.bulk.COGLET_PREDICTIONS", spills)
    monkeypatch.setattr("e5.service.return_freed_memory", lambda: None)
    monkeypatch.setattr(predictor.service, "_last_sweep", -float("inf"))
    # the batcher never idles here (its trim is 1 s away): the sweep comes from the request's end
    loop.run_until_complete(predictor.predict(**{**DEFAULTS, "texts": ["hello"]}))
    loop.run_until_complete(asyncio.sleep(0.2))  # the sweep runs on a worker thread
    assert not old.exists()
    assert SWEEP_INTERVAL_S + SPILL_MIN_AGE_S <= 60  # what /tmp may hold: ~a minute of outputs over 6 MiB


def test_an_arena_cap_leaves_the_allocator_tuning_in_place(monkeypatch):
    from e5 import memory

    calls = []
    monkeypatch.setattr(memory, "_libc_function", lambda name: lambda *args: calls.append(name) or 1)
    assert memory.reuse_freed_memory({"MALLOC_ARENA_MAX": "2"})
    assert memory.reuse_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert calls == ["mallopt"] * 6


def test_cog_yaml_caps_the_malloc_arenas():
    from testkit.cog_server import ROOT

    lines = [line.split("#")[0].strip() for line in (ROOT / "cog.yaml").read_text().splitlines()]
    assert "- MALLOC_ARENA_MAX=2" in lines
