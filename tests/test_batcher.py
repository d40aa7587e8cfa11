"""Cross-request batching through direct calls: merged forwards, per-request fates, cancellation."""

from __future__ import annotations

import asyncio
import itertools
import time

import numpy as np
import pytest

from conftest import DEFAULTS, within_bound
from e5 import EngineError, InputError

TEXTS = [f"query number {i} about protein" for i in range(12)]


def gather(predictor, loop, requests):
    async def run():
        return await asyncio.gather(
            *(predictor.predict(**{**DEFAULTS, **r}) for r in requests), return_exceptions=True
        )

    return loop.run_until_complete(within_bound(run()))


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

    doomed, keeper = loop.run_until_complete(within_bound(run()))
    assert isinstance(doomed, asyncio.CancelledError)
    assert np.abs(np.array(keeper.embeddings) - want).max() < 1e-5
    assert predictor.healthcheck()
    assert np.abs(np.array(embed(texts=TEXTS).embeddings) - want).max() < 1e-5


def test_a_new_event_loop_gets_a_working_batcher(predictor, embed):
    want = embed(texts=TEXTS[:2]).embeddings
    out = asyncio.run(predictor.predict(**{**DEFAULTS, "texts": TEXTS[:2]}))
    assert np.abs(np.array(out.embeddings) - np.array(want)).max() < 1e-6


def fake_embedder(budget: int = 2048, forward_s: float = 0.0, forwards: list | None = None, forward_cost: int = 0):
    """The batcher's view of an engine: the real planner, and a forward that says which texts it ran.

    Each vector is (first id, length, 0, 0), so a test sees which text landed in which row of which job.
    """
    from types import SimpleNamespace

    import torch

    from e5.batching import plan_batches

    def forward(sequences, flags):
        time.sleep(forward_s)  # on the forward thread, as a real forward would
        if forwards is not None:
            forwards.append([s[0] for s in sequences])
        return torch.tensor([[s[0], len(s), 0, 0] for s in sequences], dtype=torch.float32)

    return SimpleNamespace(profile=SimpleNamespace(token_budget=budget),
                           plan=lambda lengths: plan_batches(lengths, budget, 1, forward_cost), forward=forward)


def test_a_small_request_behind_a_big_one_waits_for_the_forward_under_way_and_its_own():
    from e5.batcher import Batcher

    forwards: list[list[int]] = []
    big = [[1000 + i] + [5] * 9 for i in range(200)]  # 200 texts of 10 tokens: 20 forwards of 100 tokens
    small = [[7, 5, 2]]

    async def scenario():
        batcher = Batcher(fake_embedder(budget=100, forward_s=0.02, forwards=forwards), max_wait_s=0.0)
        try:
            big_request = asyncio.ensure_future(batcher.embed(big, [True] * len(big)))
            while len(forwards) < 3:
                await asyncio.sleep(0.001)
            arrived_after = len(forwards)
            small_vectors, _ = await batcher.embed(small, [True])
            answered_after = len(forwards)
            big_vectors, _ = await big_request
            return arrived_after, answered_after, small_vectors, big_vectors
        finally:
            batcher.close()

    arrived_after, answered_after, small_vectors, big_vectors = asyncio.run(scenario())
    # At most the forward under way, then the small request's own.
    assert answered_after - arrived_after <= 2, (arrived_after, answered_after)
    assert [7] in forwards[arrived_after:answered_after]
    # The big request kept full forwards: its 20, plus the small one's.
    assert len(forwards) == 21 and sorted(map(len, forwards)) == [1] + [10] * 20
    assert small_vectors.tolist() == [[7, 3, 0, 0]]
    assert big_vectors[:, 0].tolist() == [1000 + i for i in range(200)]  # each row in its own place


def test_two_big_requests_take_turns():
    from e5.batcher import Batcher

    forwards: list[list[int]] = []
    first = [[1000 + i] + [5] * 9 for i in range(100)]
    second = [[2000 + i] + [5] * 9 for i in range(100)]

    async def scenario():
        batcher = Batcher(fake_embedder(budget=100, forwards=forwards), max_wait_s=0.0)
        try:
            await asyncio.gather(batcher.embed(first, [True] * 100), batcher.embed(second, [True] * 100))
        finally:
            batcher.close()

    asyncio.run(scenario())
    owners = [ids[0] // 1000 for ids in forwards]
    assert sorted(owners) == [1] * 10 + [2] * 10
    longest_run = max(len(list(run)) for _, run in itertools.groupby(owners))
    assert longest_run <= 2, owners  # neither waits for the other to finish: they take turns


class LaunchedVectors:
    """What a CUDA forward returns: kernels launched, not finished. Copying to the host waits for the device."""

    def __init__(self, tensor, device_seconds: float):
        self.tensor, self.device_seconds = tensor, device_seconds

    def cpu(self):
        time.sleep(self.device_seconds)
        return self.tensor.cpu()


def test_the_forward_is_timed_until_the_device_is_done_and_the_loop_never_waits_for_it():
    from e5.batcher import Batcher

    embedder = fake_embedder()
    launch = embedder.forward
    embedder.forward = lambda sequences, flags: LaunchedVectors(launch(sequences, flags), 0.3)

    async def scenario():
        batcher = Batcher(embedder, max_wait_s=0.0)
        gaps, last, done = [], time.perf_counter(), False

        async def ticker():  # the event loop's other work: it must keep running during the device's 0.3 s
            nonlocal last
            while not done:
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticking = asyncio.ensure_future(ticker())
        try:
            vectors, job = await batcher.embed([[3, 5, 2], [4, 2]], [True, True])
        finally:
            done = True
            await ticking
            batcher.close()
        return vectors, job.forward_seconds, max(gaps)

    vectors, forward_seconds, longest_gap = asyncio.run(scenario())
    assert isinstance(vectors, np.ndarray) and vectors[:, 0].tolist() == [3, 4]
    assert forward_seconds >= 0.3
    assert longest_gap < 0.15


def test_a_stream_of_new_queries_does_not_starve_a_large_request():
    from e5.batcher import Batcher

    big = [[1000 + i] + [5] * 9 for i in range(50)]  # 5 pieces

    async def scenario():
        # Waiting for answered callers to come back, as with real clients: the next query is always queued.
        batcher = Batcher(fake_embedder(budget=100, forward_s=0.005), max_wait_s=0.05)
        sent = 0

        async def client():  # two of them: while one query runs, the other's is already queued
            nonlocal sent
            while not big_request.done() and sent < 100:
                sent += 1
                await batcher.embed([[7, 5, 2]], [True])

        try:
            big_request = asyncio.ensure_future(batcher.embed(big, [True] * len(big)))
            await asyncio.sleep(0)
            await asyncio.gather(client(), client())
            return big_request.done(), sent
        finally:
            batcher.close()

    big_done, sent = asyncio.run(scenario())
    assert big_done and sent <= 12, sent  # the large request got every other round


def test_new_requests_each_get_a_piece_in_the_next_round():
    """A new request's first piece only: another new request is not pushed out by its second piece."""
    from e5.batcher import Batcher

    forwards: list[list[int]] = []
    two_pieces = [[100] + [5] * 39, [101] + [5] * 9]  # planned apart: pieces of 40 and 10 tokens
    one_piece = [[200] + [5] * 54]  # 55 tokens: the round has room for it beside the first piece, not both

    async def scenario():
        embedder = fake_embedder(budget=200, forwards=forwards, forward_cost=20)
        batcher = Batcher(embedder, max_wait_s=0.05, round_tokens=100)
        try:
            with batcher.arriving():  # both queued before the first round
                first = asyncio.ensure_future(batcher.embed(two_pieces, [True, True]))
                second = asyncio.ensure_future(batcher.embed(one_piece, [True]))
                await asyncio.sleep(0)
            await asyncio.gather(first, second)
        finally:
            batcher.close()

    asyncio.run(scenario())
    assert sorted(forwards[0]) == [100, 200] and forwards[1] == [101]


def test_a_request_cancelled_mid_round_loses_its_forward_in_that_round():
    """Three new requests share a round planned into three forwards; the third is cancelled during the first."""
    from e5.batcher import Batcher

    forwards: list[list[int]] = []
    requests = [[[100 * k + i] + [5] * (99 - 10 * k) for i in range(1)] for k in range(1, 4)]  # 89, 79, 69 tokens

    async def scenario():
        embedder = fake_embedder(budget=100, forward_s=0.1, forwards=forwards)
        batcher = Batcher(embedder, max_wait_s=0.05, round_tokens=300)
        try:
            with batcher.arriving():  # all three queued before the round is taken
                jobs = [asyncio.ensure_future(batcher.embed(r, [True])) for r in requests]
                await asyncio.sleep(0)
            await asyncio.sleep(0.15)  # the round's first forward is running
            jobs[2].cancel()
            results = await asyncio.gather(*jobs, return_exceptions=True)
            await asyncio.sleep(0.3)  # time for a third forward, had it stayed in the plan
            return results
        finally:
            batcher.close()

    results = asyncio.run(scenario())
    assert isinstance(results[2], asyncio.CancelledError)
    assert [ids[0] for ids in forwards] == [100, 200], forwards  # the third never ran


def test_a_request_cancelled_while_its_round_is_planned_takes_no_room_in_it():
    """Cancelled while the forward thread plans it: its piece would take room a live request needs."""
    import threading

    from e5.batcher import Batcher

    doomed = [[100] + [5] * 19]  # 20 tokens: the smaller piece, so it would be taken first
    keeper = [[200] + [5] * 89]  # 90 tokens: fits a round of 100 only without the doomed piece
    planning, release = threading.Event(), threading.Event()
    rounds: list[list[int]] = []

    async def scenario():
        embedder = fake_embedder(budget=100)
        plan = embedder.plan

        def slow_plan(lengths):
            planning.set()
            release.wait(5)
            return plan(lengths)

        embedder.plan = slow_plan
        batcher = Batcher(embedder, max_wait_s=0.05, round_tokens=100)
        take_round = batcher._take_round

        def recorded_round():
            pieces = take_round()
            rounds.append([job.sequences[row][0] for piece in pieces for job, row in piece])
            return pieces

        batcher._take_round = recorded_round
        try:
            with batcher.arriving():  # both queued before the round is planned
                jobs = [asyncio.ensure_future(batcher.embed(r, [True])) for r in (doomed, keeper)]
                await asyncio.sleep(0)
            while not planning.is_set():
                await asyncio.sleep(0.001)
            jobs[0].cancel()
            await asyncio.sleep(0.01)  # the cancellation reaches the job's future
            release.set()
            return await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), 5)
        finally:
            release.set()
            batcher.close()

    results = asyncio.run(scenario())
    assert isinstance(results[0], asyncio.CancelledError)
    assert rounds[0] == [200], rounds  # the first round is the live request's, whole


def test_a_cancelled_request_s_texts_are_not_computed(predictor, loop, embed):
    want = np.array(embed(texts=TEXTS).embeddings)
    stats = predictor.service._batcher.stats
    doomed_texts = [f"the protein female eat number {i} " * 8 for i in range(400)]

    async def run():
        rows_before = stats.rows
        doomed = asyncio.ensure_future(predictor.predict(**{**DEFAULTS, "texts": doomed_texts, "input_type": "document"}))
        while stats.rows == rows_before:  # its first forward ran
            await asyncio.sleep(0.001)
        doomed.cancel()
        keeper = await predictor.predict(**{**DEFAULTS, "texts": TEXTS})
        await asyncio.sleep(0.2)  # anything still queued for the cancelled request would run now
        return doomed, keeper, stats.rows - rows_before

    doomed, keeper, rows = loop.run_until_complete(within_bound(run()))
    assert doomed.cancelled()
    assert rows < len(doomed_texts) // 2, rows  # most of its texts never reached a forward
    assert np.abs(np.array(keeper.embeddings) - want).max() < 1e-5


def test_a_dying_loop_fails_what_it_held_logs_once_and_starts_again(predictor, loop, embed, monkeypatch, caplog):
    want = np.array(embed(texts=TEXTS[:2]).embeddings)
    batcher = predictor.service._batcher
    real_take_round = batcher._take_round
    calls = []

    def take_round_once_broken():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug outside the round's try")
        return real_take_round()

    monkeypatch.setattr(batcher, "_take_round", take_round_once_broken)
    results = gather(predictor, loop, [dict(texts=TEXTS[:2]), dict(texts=TEXTS[2:4])])
    failed = [r for r in results if isinstance(r, Exception)]
    assert failed and all(isinstance(r, EngineError) and r.code == "batcher_failure" for r in failed)
    assert "a bug outside the round's try" in str(failed[0]) and "send the request again" in str(failed[0])
    assert len([r for r in caplog.records if "the batcher loop failed" in r.getMessage()]) == 1
    assert batcher.stats.restarts == 1 and predictor.healthcheck()
    assert np.abs(np.array(embed(texts=TEXTS[:2]).embeddings) - want).max() < 1e-5  # the next request is served


def test_a_loop_that_keeps_dying_makes_the_container_unhealthy_and_fails_fast():
    from e5.batcher import RESTARTS_ALLOWED, Batcher

    async def scenario():
        batcher = Batcher(fake_embedder(), max_wait_s=0.0)

        def broken():
            raise RuntimeError("always")

        batcher._take_round = broken
        try:
            outcomes = []
            for _ in range(RESTARTS_ALLOWED + 2):
                try:
                    await asyncio.wait_for(batcher.embed([[0, 5, 2]], [True]), 5)
                except Exception as err:  # a hang would be a TimeoutError here
                    outcomes.append(err)
            return outcomes, batcher.healthy(), batcher.stats.restarts
        finally:
            batcher.close()

    outcomes, healthy, restarts = asyncio.run(scenario())
    assert all(isinstance(e, EngineError) for e in outcomes), outcomes
    assert [("send the request again" in str(e)) for e in outcomes] == [True] * (RESTARTS_ALLOWED + 1) + [False]
    assert "stopped after repeated failures" in str(outcomes[-1])
    assert not healthy and restarts == RESTARTS_ALLOWED


def test_a_loop_cancelled_from_outside_is_started_again_by_the_next_request():
    from e5.batcher import Batcher

    async def scenario():
        batcher = Batcher(fake_embedder(), max_wait_s=0.0)
        try:
            batcher._task.cancel()
            await asyncio.sleep(0.01)
            unhealthy_while_dead = not batcher.healthy()
            vectors, _ = await asyncio.wait_for(batcher.embed([[0, 5, 2]], [True]), 5)
            return unhealthy_while_dead, vectors.shape, batcher.healthy()
        finally:
            batcher.close()

    assert asyncio.run(scenario()) == (True, (1, 4), True)


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
    embedder = SimpleNamespace(
        profile=SimpleNamespace(token_budget=2048),
        plan=lambda lengths: [list(range(len(lengths)))],
        forward=lambda sequences, flags: torch.zeros(len(sequences), 4),
    )

    async def scenario():
        batcher = Batcher(embedder, max_wait_s=0.0, idle_trim_s=0.3, on_idle=lambda: trims.append(1))
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


def test_an_idle_container_deletes_the_output_files_cog_leaves_behind(predictor, tmp_path, monkeypatch):
    """coglet 0.23 writes each output over 6 MiB to a spill file it never deletes (see e5/bulk.py)."""
    import os

    spills = tmp_path / "predictions"
    old = spills / "pred-1" / "outputs" / "spill_a.json"
    fresh = spills / "pred-2" / "outputs" / "spill_b.json"
    for path in (old, fresh):
        path.parent.mkdir(parents=True)
        path.write_text("{}")
    os.utime(old, (time.time() - 120, time.time() - 120))  # read by the server long ago
    monkeypatch.setattr("e5.bulk.COGLET_PREDICTIONS", spills)
    service = predictor.service
    monkeypatch.setattr(service, "_last_sweep", -float("inf"))
    service.tidy_up()
    assert not old.exists() and fresh.exists()  # a fresh one may still be read
    os.utime(fresh, (time.time() - 120, time.time() - 120))
    service.tidy_up()  # within SWEEP_INTERVAL_S of the last sweep: nothing looks
    assert fresh.exists()


def test_the_service_s_batcher_tidies_up_when_idle(predictor, loop, embed):
    embed(texts=["hello"])
    assert predictor.service._batcher.on_idle == predictor.service.tidy_up


def test_queries_with_a_long_task_tokenize_off_the_event_loop(predictor, loop, monkeypatch):
    """The threshold counts the task in front of each query: 100 short queries and a 2,000-character task are
    ~200,000 characters for the tokenizer, though the texts alone are 1,000."""
    import threading

    from conftest import DEFAULTS
    from e5 import service

    threads = []
    real = service.prepare
    monkeypatch.setattr(service, "prepare", lambda *a, **k: threads.append(threading.current_thread()) or real(*a, **k))
    texts = [f"query {i:04d}" for i in range(100)]
    assert sum(map(len, texts)) < service.TOKENIZE_IN_THREAD_CHARS
    loop.run_until_complete(predictor.predict(**{**DEFAULTS, "texts": texts, "task": "Find the passage. " * 110}))
    assert threads and all(t is not threading.main_thread() for t in threads)


def test_a_loop_cancelled_as_it_is_woken_ends():
    """A refusal wakes the idle loop (trim_soon) as the event loop may be shutting down: the cancellation must
    not be lost (asyncio.wait_for before Python 3.12 lost it, and asyncio.run() then waited forever)."""
    from e5.batcher import Batcher

    async def scenario():
        batcher = Batcher(fake_embedder(), max_wait_s=0.0, idle_trim_s=0.05, on_idle=lambda: None)
        batcher.trim_soon()
        await asyncio.sleep(0.01)  # the loop waits out its idle delay
        batcher.trim_soon()  # the event is set ...
        batcher._task.cancel()  # ... and the loop cancelled in the same step
        await asyncio.wait([batcher._task], timeout=2.0)
        done = batcher._task.done()
        batcher.close()
        return done

    assert asyncio.run(scenario())
