"""Memory and files handed back when they are no longer needed: after refused and failed requests too, and
as requests end under load (not only when the container idles)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from testkit.uploads import as_upload

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


def test_uploads_of_cancelled_jobs_are_swept_and_nothing_else(tmp_path):
    from e5.bulk import UPLOAD_MIN_AGE_S, remove_stale_uploads

    old = time.time() - UPLOAD_MIN_AGE_S - 1
    names = {"stale": "tmpab12_x9zfile.txt", "fresh": "tmpcd34_y8yfile.bin", "running": "tmpef56_z7xfile",
             "open": "tmpgh78_w6wfile.gz", "not cog's": "tmpij90_v5vnotes.txt", "a folder": "tmpkl12_u4ufile.d"}
    paths = {what: tmp_path / name for what, name in names.items()}
    for what, path in paths.items():
        path.mkdir() if what == "a folder" else path.write_bytes(b"x")
        if what != "fresh":
            os.utime(path, (old, old))
    with open(paths["open"], "rb"):  # a download being written, or a file being read
        removed = remove_stale_uploads(tmp_path, frozenset({paths["running"]}))
    assert removed == [paths["stale"]]
    assert all(path.exists() for what, path in paths.items() if what != "stale")


def test_a_running_bulk_job_s_input_is_in_use_until_it_ends(predictor, loop, tmp_path, monkeypatch):
    from conftest import DEFAULTS

    seen = []
    monkeypatch.setattr("e5.service.remove_leftovers", lambda in_use=frozenset(): seen.append(set(in_use)))
    path = tmp_path / "tmpab12_x9zfile.txt"
    path.write_text("one\ntwo\n")
    loop.run_until_complete(predictor.predict(**{**DEFAULTS, "texts_file": as_upload(path), "input_type": "document"}))
    assert seen and seen[0] == {path}
    assert predictor.service._files_in_use == set()
