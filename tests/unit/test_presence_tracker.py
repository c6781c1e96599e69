"""PresenceTracker over the in-memory store: batching, promptness, failures, leadership.

Time that decides presence is the injected clock; the tracker's own flush and sweep periods
are set short and awaited through events (store calls, transitions), never slept through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from presence.state import (
    CLOSE,
    HEARTBEAT,
    OFFLINE,
    ONLINE,
    DeviceEvent,
    Transition,
    UserPresence,
)
from presence.store.base import PresenceUnavailable
from presence.store.memory import MemoryPresenceStore
from presence.tracker import PresenceTracker
from tests.support.presence import T0, CountingStore, FakeClock, Transitions

TIMEOUT_MS = 30_000


class Leader:
    """An ``is_leader`` that the test flips, counting how often the sweeper asked."""

    def __init__(self, leading: bool) -> None:
        self.leading = leading
        self.asked = 0
        self._asked = asyncio.Event()

    def __call__(self) -> bool:
        self.asked += 1
        self._asked.set()
        return self.leading

    async def wait_asked(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.asked < count:
                self._asked.clear()
                await self._asked.wait()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> CountingStore:
    return CountingStore(MemoryPresenceStore(timeout_ms=TIMEOUT_MS))


@pytest.fixture
def transitions() -> Transitions:
    return Transitions()


@pytest.fixture
async def make(store: CountingStore, clock: FakeClock, transitions: Transitions) -> AsyncIterator[Callable[..., PresenceTracker]]:
    made: list[PresenceTracker] = []

    def build(**kwargs: Any) -> PresenceTracker:
        target = kwargs.pop("store", store)
        options: dict[str, Any] = {
            "clock": clock,
            "on_transition": transitions,
            "flush_interval_s": 0.05,
            "prompt_s": 0.0,
            "sweep_interval_s": 3600,
        }
        options.update(kwargs)
        tracker = PresenceTracker(target, **options)
        made.append(tracker)
        return tracker

    yield build
    for tracker in made:
        await tracker.close()


async def test_hello_shows_online_promptly_and_is_reported(make: Callable[..., PresenceTracker], transitions: Transitions) -> None:
    tracker = make(flush_interval_s=3600)  # only the prompt path can write it
    await tracker.start()
    await tracker.connected("alice", "s1")
    assert await transitions.wait_for("alice", ONLINE) == Transition("alice", ONLINE, T0)
    assert (await tracker.query(["alice"]))["alice"] == UserPresence(ONLINE, T0)


async def test_heartbeats_of_many_devices_are_written_in_one_call(
    make: Callable[..., PresenceTracker], store: CountingStore, clock: FakeClock
) -> None:
    tracker = make(flush_interval_s=0.2)
    for i in range(1000):
        await tracker.connected(f"u{i}", "s")
    await store.wait_call("apply", 1)
    assert len(store.batches[0]) == 1000
    clock.advance(5000)
    for _ in range(3):  # every device heartbeats three times before the next flush
        for i in range(1000):
            tracker.heartbeat(f"u{i}", "s")
        clock.advance(1)
    await store.wait_call("apply", 2)
    batch = store.batches[1]
    assert len(batch) == 1000 and store.calls["apply"] == 2
    # The newest heartbeat of each device won.
    assert {e.at_ms for e in batch} == {T0 + 5002} and {e.kind for e in batch} == {HEARTBEAT}


async def test_plain_heartbeats_wait_for_the_flush_interval(make: Callable[..., PresenceTracker], store: CountingStore) -> None:
    tracker = make(flush_interval_s=3600)
    await tracker.connected("alice", "s1")
    await store.wait_call("apply", 1)
    tracker.heartbeat("alice", "s1")
    await tracker.connected("bob", "s1")  # a hello takes the waiting heartbeat along
    await store.wait_call("apply", 2)
    assert [(e.user, e.kind) for e in store.batches[1]] == [("alice", HEARTBEAT), ("bob", HEARTBEAT)]
    tracker.heartbeat("alice", "s1")
    assert tracker.stats().pending == 1 and store.calls["apply"] == 2
    assert await tracker.flush()
    assert tracker.stats().pending == 0 and store.calls["apply"] == 3


async def test_clean_close_goes_offline_at_once_and_last_device_decides(
    make: Callable[..., PresenceTracker], clock: FakeClock, transitions: Transitions
) -> None:
    tracker = make()
    await tracker.connected("alice", "phone")
    await tracker.connected("alice", "laptop")
    await transitions.wait_for("alice", ONLINE)
    clock.advance(1000)
    await tracker.disconnected("alice", "phone")
    await tracker.flush()
    assert (await tracker.query(["alice"]))["alice"].status == ONLINE
    clock.advance(1000)
    await tracker.disconnected("alice", "laptop")
    assert await transitions.wait_for("alice", OFFLINE) == Transition("alice", OFFLINE, T0 + 2000)
    assert [t.status for t in transitions.got] == [ONLINE, OFFLINE]


async def test_a_socket_shorter_than_a_flush_still_leaves_its_last_seen(
    make: Callable[..., PresenceTracker], store: CountingStore, clock: FakeClock, transitions: Transitions
) -> None:
    tracker = make(prompt_s=3600, flush_interval_s=3600)
    await tracker.connected("alice", "s1")
    assert (await tracker.query(["alice"]))["alice"] == UserPresence(ONLINE, T0)  # this node knows
    clock.advance(20)
    await tracker.disconnected("alice", "s1")
    assert (await tracker.query(["alice"]))["alice"] == UserPresence(OFFLINE, T0 + 20)
    assert await tracker.flush()
    assert [(e.kind, e.user) for e in store.batches[0]] == [(HEARTBEAT, "alice"), (CLOSE, "alice")]
    assert transitions.got == [Transition("alice", ONLINE, T0), Transition("alice", OFFLINE, T0 + 20)]
    assert (await tracker.query(["alice"]))["alice"] == UserPresence(OFFLINE, T0 + 20)


async def test_a_failed_flush_keeps_its_batch_and_logs_once_per_outage(
    make: Callable[..., PresenceTracker], store: CountingStore, clock: FakeClock, transitions: Transitions, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = make(retry_max_s=0.05)
    store.failing = {"apply"}
    with caplog.at_level(logging.DEBUG, logger="presence.tracker"):
        await tracker.connected("alice", "s1")
        clock.advance(10)
        await tracker.connected("bob", "s1")
        await store.wait_call("apply", 4)  # several failed attempts, retried without being asked
        assert transitions.got == [] and tracker.stats().pending == 2
        assert (await tracker.query(["alice"]))["alice"].status == ONLINE  # still counted here
        tracker.heartbeat("alice", "s1")  # newer than the kept one: wins
        store.failing = set()
        await transitions.until(lambda: len(transitions.got) == 2)
    assert transitions.got == [Transition("alice", ONLINE, T0 + 10), Transition("bob", ONLINE, T0 + 10)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "writing heartbeats failed" in warnings[0].getMessage()
    assert any("answering again" in r.getMessage() for r in caplog.records)
    stats = tracker.stats()
    assert stats.failed_flushes >= 3 and stats.pending == 0 and stats.transitions == 2


async def test_a_close_that_arrives_during_an_outage_is_written_after_the_kept_heartbeat(
    make: Callable[..., PresenceTracker], store: CountingStore, transitions: Transitions
) -> None:
    tracker = make(prompt_s=3600, flush_interval_s=3600)
    await tracker.connected("alice", "s1")
    assert await tracker.flush()
    tracker.heartbeat("alice", "s1")
    store.failing = {"apply"}
    assert not await tracker.flush()
    await tracker.disconnected("alice", "s1")
    store.failing = set()
    assert await tracker.flush()
    assert [(e.kind, e.user) for e in store.batches[-1]] == [(HEARTBEAT, "alice"), (CLOSE, "alice")]
    assert [t.status for t in transitions.got] == [ONLINE, OFFLINE]
    assert (await tracker.query(["alice"]))["alice"].status == OFFLINE


async def test_pending_devices_are_bounded(make: Callable[..., PresenceTracker], store: CountingStore) -> None:
    tracker = make(max_pending=3, prompt_s=3600, flush_interval_s=3600)
    for i in range(5):
        await tracker.connected(f"u{i}", "s")
    tracker.heartbeat("u0", "s")  # replaces a waiting entry: still accepted
    stats = tracker.stats()
    assert (stats.pending, stats.dropped) == (3, 2)
    assert await tracker.flush()
    assert [e.user for e in store.batches[0]] == ["u0", "u1", "u2"]


async def test_a_large_backlog_is_written_in_bounded_batches_with_each_close_beside_its_heartbeat(
    make: Callable[..., PresenceTracker], store: CountingStore, transitions: Transitions
) -> None:
    tracker = make(max_batch=3, prompt_s=0.0, flush_interval_s=3600)
    for i in range(5):
        await tracker.connected(f"u{i}", "s")
    await tracker.disconnected("u4", "s")
    await store.wait_call("apply", 2)
    assert [len(b) for b in store.batches] == [3, 3]
    assert [(e.kind, e.user) for e in store.batches[0]] == [(HEARTBEAT, "u4"), (HEARTBEAT, "u0"), (CLOSE, "u4")]
    assert tracker.stats().pending == 0
    assert [t.user for t in transitions.got if t.status == ONLINE] == ["u4", "u0", "u1", "u2", "u3"]


class SmallBatchStore(CountingStore):
    """A loaded store: any call with more than ``fits`` events times out."""

    fits = 4

    async def apply(self, events: Sequence[DeviceEvent]) -> list[Transition]:
        if len(events) > self.fits:
            self.batches.append(list(events))
            self._count("apply")
            raise PresenceUnavailable("no reply in time")
        return await super().apply(events)


async def test_a_batch_too_big_for_the_store_is_halved_until_it_fits(
    make: Callable[..., PresenceTracker], transitions: Transitions
) -> None:
    store = SmallBatchStore(MemoryPresenceStore(timeout_ms=TIMEOUT_MS))
    tracker = make(store=store, max_batch=16, retry_max_s=0.0)
    for i in range(10):
        await tracker.connected(f"u{i}", "s")
    await transitions.until(lambda: len(transitions.got) == 10)
    # 10 (refused), 8 (refused), 4, then 6 left: 8 allowed again but 6 > 4 refused, 4, 2.
    assert [len(b) for b in store.batches] == [10, 8, 4, 6, 4, 2]
    assert tracker.stats().pending == 0


async def test_the_sweeper_runs_only_while_leading(
    make: Callable[..., PresenceTracker], store: CountingStore, clock: FakeClock, transitions: Transitions
) -> None:
    leader = Leader(False)
    tracker = make(is_leader=leader, sweep_interval_s=0.01)
    await tracker.start()
    await tracker.connected("alice", "s1")
    await transitions.wait_for("alice", ONLINE)
    clock.advance(TIMEOUT_MS + 1)
    await leader.wait_asked(leader.asked + 5)  # five sweeper ticks, each asked whether it leads
    assert store.calls.get("expire", 0) == 0 and [t.status for t in transitions.got] == [ONLINE]
    assert (await tracker.query(["alice"]))["alice"] == UserPresence(ONLINE, T0)  # recorded until swept
    leader.leading = True
    assert await transitions.wait_for("alice", OFFLINE) == Transition("alice", OFFLINE, T0)


async def test_sweep_drains_in_bounded_batches(make: Callable[..., PresenceTracker], clock: FakeClock, transitions: Transitions) -> None:
    tracker = make(sweep_batch=10, sweep_batches=3)
    for i in range(45):
        await tracker.connected(f"u{i}", "s")
    assert await tracker.flush()
    clock.advance(TIMEOUT_MS + 1)
    assert await tracker.sweep() == 30
    assert await tracker.sweep() == 15
    assert len([t for t in transitions.got if t.status == OFFLINE]) == 45


async def test_a_handler_that_raises_does_not_stop_presence(make: Callable[..., PresenceTracker], store: CountingStore) -> None:
    seen: list[str] = []

    def handler(transition: Transition) -> None:
        seen.append(transition.user)
        raise RuntimeError("bug in the handler")

    tracker = make(on_transition=handler, prompt_s=3600, flush_interval_s=3600)
    await tracker.connected("alice", "s1")
    await tracker.connected("bob", "s1")
    assert await tracker.flush()
    assert seen == ["alice", "bob"]


async def test_close_writes_what_is_pending(make: Callable[..., PresenceTracker], store: CountingStore, transitions: Transitions) -> None:
    tracker = make(prompt_s=3600, flush_interval_s=3600)
    await tracker.connected("alice", "s1")
    assert await tracker.flush()
    await tracker.disconnected("alice", "s1")
    await tracker.close()
    assert [t.status for t in transitions.got] == [ONLINE, OFFLINE]
    assert (await store.query(["alice"]))["alice"].status == OFFLINE


async def test_online_among_and_fanout_rule(make: Callable[..., PresenceTracker]) -> None:
    tracker = make(fanout_max=100)
    for user in ("a", "b", "c"):
        await tracker.connected(user, "s")
    assert await tracker.flush()
    sample = await tracker.online_among(["c", "x", "a", "b"], limit=2)
    assert (sample.count, sample.users) == (3, ["c", "a"])
    assert tracker.notifies_members(100) and not tracker.notifies_members(101)
    assert tracker.heartbeat_interval_ms == 5000


def test_a_timeout_shorter_than_two_heartbeats_is_refused() -> None:
    with pytest.raises(ValueError):
        PresenceTracker(MemoryPresenceStore(timeout_ms=9000), heartbeat_s=5)
