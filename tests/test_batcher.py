"""Cross-request batching through direct calls: merged forwards, per-request fates, cancellation."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from conftest import DEFAULTS
from e5 import InputError

TEXTS = [f"query number {i} about protein" for i in range(12)]


def gather(predictor, loop, requests):
    async def run():
        return await asyncio.gather(
            *(predictor.predict(**{**DEFAULTS, **r}) for r in requests), return_exceptions=True
        )

    return loop.run_until_complete(run())


def test_concurrent_requests_share_forwards_and_get_their_own_vectors(predictor, loop, embed):
    alone = [np.array(embed(texts=[t]).embeddings[0]) for t in TEXTS]
    stats = predictor.service._batcher.stats
    forwards_before, merged_before = stats.forwards, stats.merged_forwards
    results = gather(predictor, loop, [dict(texts=[t]) for t in TEXTS])
    for t, out, want in zip(TEXTS, results, alone):
        assert np.abs(np.array(out.embeddings[0]) - want).max() < 1e-5
    assert stats.merged_forwards > merged_before
    assert stats.forwards - forwards_before < len(TEXTS)


def test_a_bad_request_among_good_ones_fails_alone(predictor, loop, embed):
    want = np.array(embed(texts=TEXTS[:2]).embeddings)
    results = gather(predictor, loop, [dict(texts=TEXTS[:2]), dict(texts=["fine", ""]), dict(texts=TEXTS[:2])])
    assert isinstance(results[1], InputError) and "`texts[1]` is empty" in str(results[1])
    for out in (results[0], results[2]):
        assert np.abs(np.array(out.embeddings) - want).max() < 1e-5


def test_a_forward_that_breaks_fails_only_the_request_that_broke_it(predictor, loop, embed, monkeypatch):
    want = np.array(embed(texts=TEXTS[:3]).embeddings)
    poison = predictor.embedder.tokenize(["poison pill"]).ids[0]
    real_forward = predictor.embedder.forward

    def forward(sequences, normalize):
        if poison in sequences:
            raise RuntimeError("simulated kernel failure")
        return real_forward(sequences, normalize)

    monkeypatch.setattr(predictor.embedder, "forward", forward)
    results = gather(predictor, loop, [dict(texts=TEXTS[:3]), dict(texts=["poison pill"], input_type="document"),
                                       dict(texts=TEXTS[:3])])
    assert "simulated kernel failure" in str(results[1])
    for out in (results[0], results[2]):
        assert np.abs(np.array(out.embeddings) - want).max() < 1e-5
    assert predictor.healthcheck()


def test_a_cancelled_request_leaves_its_batch_mates_intact(predictor, loop, embed):
    want = np.array(embed(texts=TEXTS).embeddings)

    async def run():
        doomed = asyncio.ensure_future(predictor.predict(**{**DEFAULTS, "texts": TEXTS * 20}))
        keeper = asyncio.ensure_future(predictor.predict(**{**DEFAULTS, "texts": TEXTS}))
        await asyncio.sleep(0.01)
        doomed.cancel()
        return await asyncio.gather(doomed, keeper, return_exceptions=True)

    doomed, keeper = loop.run_until_complete(run())
    assert isinstance(doomed, asyncio.CancelledError)
    assert np.abs(np.array(keeper.embeddings) - want).max() < 1e-5
    assert predictor.healthcheck()
    assert np.abs(np.array(embed(texts=TEXTS).embeddings) - want).max() < 1e-5


def test_a_new_event_loop_gets_a_working_batcher(predictor, embed):
    want = embed(texts=TEXTS[:2]).embeddings
    out = asyncio.run(predictor.predict(**{**DEFAULTS, "texts": TEXTS[:2]}))
    assert np.abs(np.array(out.embeddings) - np.array(want)).max() < 1e-6


def test_healthcheck_reports_a_dead_batcher(predictor, loop, embed):
    embed(texts=TEXTS[:1])
    batcher = predictor.service._batcher
    assert batcher.loop is loop and predictor.healthcheck()
    batcher._task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    assert not predictor.healthcheck()
    predictor.service._batcher = None  # the next predict() builds a fresh one
    assert predictor.healthcheck()


def wait_for_company(monkeypatch, answered: int, back_after_sleeps: int | None, arriving: int = 0) -> float:
    """Run the batcher's wait on a fake clock; returns the seconds it waited."""
    from types import SimpleNamespace

    from e5.batcher import Batcher

    clock = [0.0]
    real_sleep = asyncio.sleep

    async def scenario():
        batcher = Batcher(SimpleNamespace(profile=SimpleNamespace(token_budget=2048)), max_wait_s=1.0)
        batcher._last_forward_s = 10.0  # the linger: 5% of it, 0.5 s
        batcher._answered, batcher._arriving = answered, arriving
        sleeps = 0

        async def fake_sleep(seconds):
            nonlocal sleeps
            clock[0] += seconds
            sleeps += 1
            if sleeps == back_after_sleeps:
                batcher._queued_since_answer = answered  # every answered caller has sent again
            await real_sleep(0)

        monkeypatch.setattr("e5.batcher.asyncio.sleep", fake_sleep)
        try:
            await batcher._wait_for_company()
        finally:
            monkeypatch.setattr("e5.batcher.asyncio.sleep", real_sleep)
            batcher.close()

    monkeypatch.setattr("e5.batcher.time.monotonic", lambda: clock[0])
    asyncio.run(scenario())
    return clock[0]


def test_the_wait_for_company_ends_when_every_answered_caller_is_back(monkeypatch):
    # Three callers were answered; they are all queued again after 10 polls (5 ms): no need to linger on.
    assert wait_for_company(monkeypatch, answered=3, back_after_sleeps=10) == pytest.approx(0.005)


def test_the_wait_for_company_lasts_at_most_5_percent_of_a_forward(monkeypatch):
    assert wait_for_company(monkeypatch, answered=3, back_after_sleeps=None) == pytest.approx(0.5, abs=0.001)


def test_requests_still_tokenizing_are_waited_for_up_to_the_cap(monkeypatch):
    assert wait_for_company(monkeypatch, answered=3, back_after_sleeps=10, arriving=1) == pytest.approx(1.0, abs=0.001)


def test_the_batch_wait_setting_is_read_in_milliseconds_and_checked():
    from e5.batcher import DEFAULT_MAX_WAIT_S, max_wait_from_env

    assert max_wait_from_env({}) == max_wait_from_env({"E5_BATCH_WAIT_MS": ""}) == DEFAULT_MAX_WAIT_S
    assert max_wait_from_env({"E5_BATCH_WAIT_MS": "20"}) == pytest.approx(0.02)
    assert max_wait_from_env({"E5_BATCH_WAIT_MS": "0"}) == 0.0
    with pytest.raises(ValueError, match="E5_BATCH_WAIT_MS must be a number, got 'soon'"):
        max_wait_from_env({"E5_BATCH_WAIT_MS": "soon"})
    for bad in ("-5", "nan"):
        with pytest.raises(ValueError, match="E5_BATCH_WAIT_MS must be at least 0"):
            max_wait_from_env({"E5_BATCH_WAIT_MS": bad})


def test_freed_memory_goes_back_only_once_the_batcher_has_idled(monkeypatch):
    """Not between a closed loop's forwards (the next one would fault the pages in again): after idle_trim_s."""
    from types import SimpleNamespace

    import torch

    from e5.batcher import Batcher

    trims = []
    monkeypatch.setattr("e5.batcher.return_freed_memory", lambda: trims.append(1))
    embedder = SimpleNamespace(
        profile=SimpleNamespace(token_budget=2048),
        plan=lambda lengths: [list(range(len(lengths)))],
        forward=lambda sequences, flags: torch.zeros(len(sequences), 4),
    )

    async def scenario():
        batcher = Batcher(embedder, max_wait_s=0.0, idle_trim_s=0.3)
        try:
            for _ in range(5):  # back to back, as a closed loop of clients sends them
                await batcher.embed([[0, 5, 2]], [True])
                await asyncio.sleep(0.02)
            during_traffic = len(trims)
            await asyncio.sleep(0.6)
            return during_traffic, len(trims), batcher.healthy()
        finally:
            batcher.close()

    assert asyncio.run(scenario()) == (0, 1, True)
