"""The container's memory budget (e5/budget.py): the ledger's rules, without a model or a server."""

from __future__ import annotations

import asyncio
import random

import pytest

from e5.budget import (MIN_MARGIN_BYTES, SERVER_AT_REST_BYTES, SMALL_REQUEST_BYTES, BudgetSettings, MemoryBudget,
                       container_memory, default_budget, response_tail_s)
from e5.errors import BusyError, InputError
from e5.memory_model import MB


def run(coro):
    return asyncio.run(coro)


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_small_request_never_waits_even_when_the_budget_is_full_and_others_wait():
    async def main():
        budget = MemoryBudget(100 * MB, wait_s=5)
        big = await budget.reserve(100 * MB, "big", "")
        waiter = asyncio.create_task(budget.reserve(50 * MB, "next", ""))
        await settle()
        assert budget.waiting == 1
        small = await asyncio.wait_for(budget.reserve(SMALL_REQUEST_BYTES, "a query", ""), 0.5)
        assert small.small and budget.in_use_bytes == 100 * MB + SMALL_REQUEST_BYTES
        budget.release(small)
        budget.release(big)
        granted = await waiter
        assert granted.nbytes == 50 * MB and budget.large_bytes == 50 * MB

    run(main())


def test_a_request_larger_than_the_whole_budget_is_refused_at_once_naming_it():
    async def main():
        budget = MemoryBudget(300 * MB, wait_s=5, source="E5_MEMORY_BUDGET_MB")
        with pytest.raises(InputError) as err:
            await budget.reserve(301 * MB, "4000 texts, encoding_format float", "send fewer texts")
        assert err.value.code == "request_too_large"
        assert "~301 MB" in str(err.value) and "memory budget of 300 MB (E5_MEMORY_BUDGET_MB)" in str(err.value)
        assert "To fit: send fewer texts" in str(err.value)
        assert budget.in_use_bytes == 0 and budget.waiting == 0

    run(main())


def test_waiters_are_admitted_in_arrival_order_and_one_that_does_not_fit_holds_those_behind_it():
    async def main():
        budget = MemoryBudget(100 * MB, wait_s=5)
        first = await budget.reserve(60 * MB, "a", "")
        order = []

        async def wait(name, nbytes):
            reservation = await budget.reserve(nbytes, name, "")
            order.append(name)
            return reservation

        b = asyncio.create_task(wait("b", 60 * MB))
        await settle()
        c = asyncio.create_task(wait("c", 30 * MB))  # would fit in the 40 MB free, but b came first
        await settle()
        assert order == [] and budget.waiting == 2
        budget.release(first)
        await settle()
        assert order == ["b", "c"] and budget.large_bytes == 90 * MB
        budget.release(await b)
        budget.release(await c)
        assert budget.in_use_bytes == 0 and budget.peak_bytes == 90 * MB

    run(main())


def test_a_request_that_finds_no_room_within_the_wait_is_refused_naming_the_budget_and_the_way_out():
    async def main():
        budget = MemoryBudget(100 * MB, wait_s=0.2, source="physical memory")
        held = await budget.reserve(80 * MB, "held", "")
        with pytest.raises(BusyError) as err:
            await budget.reserve(50 * MB, "2000 texts, encoding_format float", "use `encoding_format` base64")
        message = str(err.value)
        assert err.value.code == "memory_busy"
        for part in ("~50 MB", "2000 texts", "E5_MEMORY_WAIT_S", "80 of the 100 MB budget", "E5_MEMORY_BUDGET_MB",
                     "Send it again", "use `encoding_format` base64"):
            assert part in message, part
        assert budget.refused == 1 and budget.waiting == 0 and budget.large_bytes == 80 * MB
        budget.release(held)
        assert (await budget.reserve(100 * MB, "after", "")).nbytes == 100 * MB  # the line is clear

    run(main())


def test_a_waiter_at_the_head_that_is_cancelled_lets_the_next_in_and_leaks_nothing():
    async def main():
        budget = MemoryBudget(100 * MB, wait_s=5)
        held = await budget.reserve(70 * MB, "held", "")
        head = asyncio.create_task(budget.reserve(90 * MB, "head", ""))
        await settle()
        behind = asyncio.create_task(budget.reserve(30 * MB, "behind", ""))
        await settle()
        assert budget.waiting == 2
        head.cancel()
        await settle()
        assert behind.done() and (await behind).nbytes == 30 * MB  # fits once the head has left the line
        budget.release(held)
        budget.release(await behind)
        assert budget.in_use_bytes == 0

    run(main())


def test_a_grant_that_meets_a_cancel_is_given_back():
    async def main():
        budget = MemoryBudget(100 * MB, wait_s=5)
        held = await budget.reserve(100 * MB, "held", "")
        waiter = asyncio.create_task(budget.reserve(100 * MB, "waiter", ""))
        await settle()
        budget.release(held)  # grants the waiter...
        waiter.cancel()  # ...which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert budget.in_use_bytes == 0 and budget.waiting == 0

    run(main())


def test_release_later_holds_the_reservation_for_the_tail_then_admits_the_next():
    async def main():
        budget = MemoryBudget(100 * MB, wait_s=5)
        held = await budget.reserve(100 * MB, "held", "")
        budget.release_later(held, 0.2)
        waiter = asyncio.create_task(budget.reserve(100 * MB, "next", ""))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        reservation = await asyncio.wait_for(waiter, 1.0)
        assert reservation.waited_s >= 0.1
        budget.release(reservation)
        budget.release(reservation)  # twice is once
        assert budget.in_use_bytes == 0

    run(main())


def test_random_traffic_never_passes_the_budget_and_ends_with_nothing_reserved():
    async def main():
        rng = random.Random(7)
        budget = MemoryBudget(500 * MB, wait_s=0.3)
        seen = []

        async def request(i):
            nbytes = rng.choice([MB, 10 * MB, 100 * MB, 200 * MB, 400 * MB, 600 * MB])
            try:
                reservation = await budget.reserve(nbytes, f"r{i}", "")
            except (InputError, BusyError):
                return
            seen.append(budget.large_bytes)
            await asyncio.sleep(rng.random() * 0.05)
            if rng.random() < 0.5:
                budget.release(reservation)
            else:
                budget.release_later(reservation, 0.02)

        tasks = [asyncio.create_task(request(i)) for i in range(200)]
        for task in tasks[::7]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.1)
        assert seen and max(seen) <= 500 * MB
        assert budget.in_use_bytes == 0 and budget.waiting == 0

    run(main())


def test_the_container_memory_is_the_cgroup_limit_else_the_machine(tmp_path):
    meminfo = tmp_path / "proc" / "meminfo"
    meminfo.parent.mkdir(parents=True)
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:        1000 kB\n")
    assert container_memory(tmp_path) == (16384000 * 1024, "physical memory")
    v2 = tmp_path / "sys" / "fs" / "cgroup" / "memory.max"
    v2.parent.mkdir(parents=True)
    v2.write_text("max\n")  # no limit
    assert container_memory(tmp_path)[1] == "physical memory"
    v2.write_text("8589934592\n")
    assert container_memory(tmp_path) == (8589934592, "cgroup limit")
    v2.unlink()
    v1 = tmp_path / "sys" / "fs" / "cgroup" / "memory" / "memory.limit_in_bytes"
    v1.parent.mkdir(parents=True)
    v1.write_text("9223372036854771712\n")  # v1's "no limit"
    assert container_memory(tmp_path)[1] == "physical memory"
    v1.write_text("4294967296\n")
    assert container_memory(tmp_path) == (4294967296, "cgroup limit")


def test_the_default_budget_is_the_memory_less_what_is_at_rest_and_a_margin(tmp_path):
    gb = 1000 * MB
    assert default_budget(48 * gb, 2 * gb) == 48 * gb - 2 * gb - SERVER_AT_REST_BYTES - int(48 * gb * 0.2)
    assert default_budget(4 * gb, 1 * gb) == 4 * gb - 1 * gb - SERVER_AT_REST_BYTES - MIN_MARGIN_BYTES
    assert default_budget(1 * gb, 1 * gb) == 256 * MB  # a container too small for the formula still serves
    (tmp_path / "sys" / "fs" / "cgroup").mkdir(parents=True)
    (tmp_path / "sys" / "fs" / "cgroup" / "memory.max").write_text(str(10 * gb))
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "status").write_text("Name: python\nVmRSS:\t  1000000 kB\n")
    settings = BudgetSettings.from_env({}, tmp_path)
    assert settings.budget_bytes == default_budget(10 * gb, 1_024_000_000)
    assert settings.source.startswith("cgroup limit 10000 MB") and settings.wait_s == 60


def test_settings_from_the_environment():
    settings = BudgetSettings.from_env({"E5_MEMORY_BUDGET_MB": "1500", "E5_MEMORY_WAIT_S": "2.5"})
    assert (settings.budget_bytes, settings.wait_s, settings.source) == (1500 * MB, 2.5, "E5_MEMORY_BUDGET_MB")
    for bad in ({"E5_MEMORY_BUDGET_MB": "lots"}, {"E5_MEMORY_BUDGET_MB": "0"}, {"E5_MEMORY_WAIT_S": "-1"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            BudgetSettings.from_env(bad)


def test_the_tail_grows_with_the_response():
    assert response_tail_s(0) == 1.5
    assert response_tail_s(4000 * MB) == pytest.approx(11.5)
    assert response_tail_s(2000 * MB, 1000 * MB) == pytest.approx(1.5 + 2.5 + 8)  # entries take Cog longer


# --- through the predictor: every path reserves, and holds until the response has left ---------------------


@pytest.fixture
def small_budget(predictor):
    """The session predictor with a budget of its own for one test."""
    service = predictor.service
    old = service.budget
    service.budget = MemoryBudget(60 * MB, wait_s=0.2, source="E5_MEMORY_BUDGET_MB")
    yield service.budget
    service.budget = old


def test_a_request_holds_its_reservation_until_its_response_has_left(embed, loop, small_budget):
    out = embed(texts=[f"text {i}" for i in range(60)], input_type="document")  # ~24 MB estimated: not small
    assert len(out.embeddings) == 60
    held = small_budget.large_bytes
    assert 20 * MB < held < 30 * MB  # still held: Cog has yet to encode and send the response
    loop.run_until_complete(asyncio.sleep(response_tail_s(held) + 0.2))
    assert small_budget.in_use_bytes == 0


def test_a_refused_or_failed_request_gives_its_reservation_back_at_once(embed, small_budget):
    with pytest.raises(InputError, match="whole memory budget of 60 MB"):
        embed(texts=[f"text {i}" for i in range(200)], input_type="document")  # ~78 MB
    with pytest.raises(InputError, match="tokens; the limit is"):
        embed(texts=["word " * 600] * 30, input_type="document", truncate=False)  # ~30 MB, refused as tokenized
    assert small_budget.in_use_bytes == 0


def test_a_bulk_job_reserves_its_result_before_any_forward(embed, loop, small_budget, tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("".join(f"line {i}\n" for i in range(2000)))  # 2,000 x 1024 x 4 x 4/3 x 11 bytes: ~120 MB
    with pytest.raises(InputError, match=r"whole memory budget of 60 MB \(E5_MEMORY_BUDGET_MB\).*split the file"):
        embed(texts_file=str(path))
    path.write_text("".join(f"line {i}\n" for i in range(300)))  # ~18 MB
    out = embed(texts_file=str(path))
    assert len(out.token_counts) == 300 and small_budget.large_bytes > 16 * MB
    loop.run_until_complete(asyncio.sleep(response_tail_s(small_budget.large_bytes) + 0.2))
    assert small_budget.in_use_bytes == 0


def test_a_busy_refusal_through_the_predictor_names_the_budget(embed, small_budget, loop):
    async def hold():
        return await small_budget.reserve(50 * MB, "held", "")

    held = loop.run_until_complete(hold())
    try:
        with pytest.raises(BusyError, match="memory is taken by other requests.*50 of the 60 MB budget"):
            embed(texts=[f"text {i}" for i in range(60)], input_type="document")
    finally:
        small_budget.release(held)
