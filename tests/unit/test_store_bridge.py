"""The driver-thread → event-loop mailbox (chat/store/bridge.py) shared by the stores."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from chat.errors import Unavailable
from chat.store.bridge import Mailbox


def run_threads(count: int, target: Any, *args: Any) -> None:
    threads = [threading.Thread(target=target, args=(i, *args)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive()


async def test_results_put_by_many_threads_at_once_all_arrive_in_order_of_their_futures() -> None:
    loop = asyncio.get_running_loop()
    mailbox = Mailbox(loop, name="test")
    per_thread, threads = 500, 8
    futures = [[loop.create_future() for _ in range(per_thread)] for _ in range(threads)]

    def produce(i: int) -> None:
        for j, future in enumerate(futures[i]):
            if j % 7 == 0:
                mailbox.put(future, None, ValueError(f"{i}-{j}"))
            else:
                mailbox.put(future, (i, j), None)

    producers = threading.Thread(target=run_threads, args=(threads, produce))
    producers.start()  # the loop stays free to drain while they put
    outcomes = await asyncio.gather(*(f for row in futures for f in row), return_exceptions=True)
    producers.join(timeout=10)
    for k, outcome in enumerate(outcomes):
        i, j = divmod(k, per_thread)
        if j % 7 == 0:
            assert isinstance(outcome, ValueError) and str(outcome) == f"{i}-{j}"
        else:
            assert outcome == (i, j)
    assert 1 <= mailbox.drains <= threads * per_thread


async def test_a_burst_from_several_threads_costs_one_loop_wakeup() -> None:
    loop = asyncio.get_running_loop()
    mailbox = Mailbox(loop, name="test")
    futures = [loop.create_future() for _ in range(400)]

    def produce(i: int) -> None:
        for k in range(i, len(futures), 4):
            mailbox.put(futures[k], k, None)

    # Joined on the loop's thread: the loop cannot drain until every thread has put.
    run_threads(4, produce)
    assert mailbox.drains == 0 and not any(f.done() for f in futures)
    assert await asyncio.gather(*futures) == list(range(400))
    assert mailbox.drains == 1

    # The drain reset the mailbox: the next result wakes the loop again.
    late = loop.create_future()
    threading.Thread(target=mailbox.put, args=(late, "again", None)).start()
    assert await late == "again"
    assert mailbox.drains == 2


async def test_put_many_hands_a_group_over_in_one_wakeup() -> None:
    loop = asyncio.get_running_loop()
    mailbox = Mailbox(loop, name="test")
    first = [loop.create_future() for _ in range(50)]
    second = [loop.create_future() for _ in range(50)]

    def commit(i: int) -> None:
        group = first if i == 0 else second
        mailbox.put_many([(f, n, None) for n, f in enumerate(group)])
        mailbox.put_many([])  # an empty group queues nothing and wakes nobody

    run_threads(2, commit)
    assert await asyncio.gather(*first, *second) == list(range(50)) * 2
    assert mailbox.drains == 1


async def test_a_result_for_a_future_nobody_waits_for_is_dropped() -> None:
    loop = asyncio.get_running_loop()
    mailbox = Mailbox(loop, name="test")
    cancelled, failed, fine = loop.create_future(), loop.create_future(), loop.create_future()
    cancelled.cancel()
    failed.set_exception(Unavailable("already failed"))
    run_threads(1, lambda _i: mailbox.put_many([(cancelled, 1, None), (failed, 2, None), (fine, 3, None)]))
    assert await fine == 3
    assert cancelled.cancelled()
    with pytest.raises(Unavailable, match="already failed"):
        failed.result()


async def test_one_item_that_cannot_be_resolved_does_not_strand_its_batch() -> None:
    class Broken:
        def done(self) -> bool:
            raise RuntimeError("broken future")

    loop = asyncio.get_running_loop()
    mailbox = Mailbox(loop, name="test")
    after = loop.create_future()
    mailbox.put_many([(Broken(), None, None), (after, "still resolved", None)])  # type: ignore[list-item]
    assert await after == "still resolved"


async def test_the_sweeper_fails_what_is_never_answered_within_two_generations() -> None:
    loop = asyncio.get_running_loop()
    sweep_s = 0.05
    mailbox = Mailbox(loop, name="test", sweep_s=sweep_s)
    answered, silent = loop.create_future(), loop.create_future()
    started = time.monotonic()
    mailbox.track(answered)
    mailbox.track(silent)
    threading.Thread(target=mailbox.put, args=(answered, "ok", None)).start()
    assert await answered == "ok"
    with pytest.raises(Unavailable) as failure:
        await silent
    elapsed = time.monotonic() - started
    assert failure.value.retry_after_ms is not None
    # Tracked just before a sweep at the earliest: fails after one generation, before a third.
    assert sweep_s <= elapsed < 3 * sweep_s + 0.5, elapsed
    # A driver that answers after all: dropped, never raised, the failure stands.
    mailbox.put(silent, "too late", None)
    probe = loop.create_future()
    mailbox.put(probe, None, None)
    await probe
    assert isinstance(silent.exception(), Unavailable)


async def test_the_sweeper_spares_what_is_answered_in_time_and_rearms_for_new_work() -> None:
    loop = asyncio.get_running_loop()
    sweep_s = 0.05
    mailbox = Mailbox(loop, name="test", sweep_s=sweep_s)
    for _ in range(2):  # the second round starts after the sweeper went idle
        quick = loop.create_future()
        mailbox.track(quick)
        loop.call_later(sweep_s / 2, mailbox.put, quick, "in time", None)
        assert await quick == "in time"
        silent = loop.create_future()
        mailbox.track(silent)
        with pytest.raises(Unavailable):
            await asyncio.wait_for(silent, 10 * sweep_s + 1)


async def test_track_needs_a_sweeper() -> None:
    mailbox = Mailbox(asyncio.get_running_loop(), name="test")
    with pytest.raises(ValueError):
        mailbox.track(asyncio.get_running_loop().create_future())


def test_a_put_after_the_loop_closed_never_raises() -> None:
    loop = asyncio.new_event_loop()
    mailbox = Mailbox(loop, name="test")
    future = loop.create_future()
    loop.close()
    errors: list[BaseException] = []

    def late(i: int) -> None:
        try:
            mailbox.put(future, i, None)
            mailbox.put_many([(future, i, None)])
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    run_threads(4, late)
    mailbox.put(future, "from the loop's own thread", None)
    assert errors == []
    assert not future.done()
