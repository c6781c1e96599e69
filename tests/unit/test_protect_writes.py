"""chat.protect's writes with a hand-moved clock: batches acked only once durable, failures and
orphans, lanes that keep bots behind their share, and the store's breaker failing fast."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chat.errors import RateLimited, Throttled, Unavailable
from chat.ids import SnowflakeGenerator, timestamp_ms
from chat.models import Channel, ChannelKind, Message
from tests.support.protect import Bus, Clock, HeldStore, TestNode, sqlite

ROOM = 5150
IDS = SnowflakeGenerator(3)


def message(key: str, room: int = ROOM) -> Message:
    mid = IDS.next_id_blocking()
    return Message(mid, room, "ann", f"text {key}", timestamp_ms(mid), key)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[TestNode, HeldStore, Clock]]:
    clock, inner = Clock(), await sqlite(tmp_path)
    await inner.create_channel(Channel(ROOM, ChannelKind.ROOM, "r", "ann", 0), ["ann"])
    store = HeldStore(inner)
    node = await TestNode("n", Bus(), clock, store, guard_store=True).start(
        batch_linger_s=0.0,
        cassandra_breaker_min_requests=4,
        cassandra_breaker_slow_s=0.5,
        cassandra_breaker_open_s=1.0,
        cassandra_breaker_probes=2,
    )
    await node.protection.pin(ROOM, True)
    yield node, store, clock
    store.hold = None
    await node.close()
    await inner.close()


async def test_a_hot_rooms_messages_are_written_in_one_batch_and_acked_only_once_durable(setup: tuple[TestNode, HeldStore, Clock]) -> None:
    node, store, _ = setup
    p = node.protection
    assert p.batched(ROOM)
    store.hold = asyncio.Event()
    sent = [message(f"k{i}") for i in range(5)]
    waits = [asyncio.ensure_future(p.write(m, lambda m: None)) for m in sent]
    await asyncio.sleep(0.05)  # the writer has taken the batch and is held in the store
    assert not any(w.done() for w in waits), "nothing may be acked before the write is durable"
    store.hold.set()
    results = await asyncio.gather(*waits)
    assert [r for r in results] == [(m, True) for m in sent]
    assert store.calls["insert_messages"] == 1 and p.counters.batches_written == 1 and p.counters.batched_messages == 5
    page = await store.inner.history(ROOM, limit=10)
    assert [m.id for m in page.messages] == [m.id for m in sent]


async def test_a_failed_batch_fails_every_sender_and_a_sender_gone_meanwhile_is_announced(setup: tuple[TestNode, HeldStore, Clock]) -> None:
    node, store, _ = setup
    p = node.protection
    store.hold, store.fail = asyncio.Event(), True
    waits = [asyncio.ensure_future(p.write(message(f"f{i}"), lambda m: None)) for i in range(3)]
    await asyncio.sleep(0.05)
    store.hold.set()
    errors = await asyncio.gather(*waits, return_exceptions=True)
    assert all(isinstance(e, Unavailable) for e in errors) and len({id(e) for e in errors}) == 3
    assert p.counters.batch_failures == 1
    # A sender that stops waiting is not acked; its message stored anyway is announced as a gap.
    store.hold, store.fail = asyncio.Event(), False
    orphaned: list[Message] = []
    gone = asyncio.ensure_future(p.write(message("gone"), orphaned.append))
    await asyncio.sleep(0.05)
    gone.cancel()
    store.hold.set()
    await asyncio.sleep(0.05)
    assert [m.client_msg_id for m in orphaned] == ["gone"] and p.counters.orphans == 1


async def test_a_full_room_queue_refuses_with_throttled_before_anything_is_stored(setup: tuple[TestNode, HeldStore, Clock]) -> None:
    node, store, _ = setup
    await node.config.set({"batch_max_queue": 2, "batch_max_inflight": 1})
    store.hold = asyncio.Event()
    first = asyncio.ensure_future(node.protection.write(message("q0"), lambda m: None))
    await asyncio.sleep(0.05)  # in flight
    queued = [asyncio.ensure_future(node.protection.write(message(f"q{i}"), lambda m: None)) for i in (1, 2)]
    with pytest.raises(Throttled) as refused:
        node.protection.write(message("q3"), lambda m: None)
    assert refused.value.retry_after_ms is not None and refused.value.retry_after_ms >= 1
    store.hold.set()
    await asyncio.gather(first, *queued)
    keys = [m.client_msg_id for m in (await store.inner.history(ROOM, limit=10)).messages]
    assert keys == ["q0", "q1", "q2"]


async def test_a_bot_flood_waits_in_its_own_lane_and_interactive_sends_pass_first(setup: tuple[TestNode, HeldStore, Clock]) -> None:
    node, _, clock = setup
    await node.config.set({"lane_budget_per_s": 10.0, "lane_bot_max_share": 0.1, "lane_bot_queue": 3, "bot_send_per_s": 1000.0})
    p = node.protection
    assert p.admit_send("bot", 9, bot=True) is None  # the one token there is
    bots = [p.admit_send("bot", 9, bot=True) for _ in range(3)]
    assert all(b is not None for b in bots)
    with pytest.raises(RateLimited):  # its lane is full: refused, not queued without bound
        p.admit_send("bot", 9, bot=True)
    person = p.admit_send("ann", 10, bot=False)
    assert person is not None  # the budget is spent this instant: even interactive waits …
    waiting = [asyncio.ensure_future(w) for w in (person, *bots)]  # type: ignore[arg-type]
    clock.now += 0.1  # … one token's time
    p.writes._pump()
    await asyncio.wait_for(waiting[0], 1)  # interactive goes before the bot backlog …
    assert not any(w.done() for w in waiting[1:])  # … which waits for its share
    for w in waiting[1:]:
        w.cancel()


async def test_a_frozen_store_turns_critical_from_calls_in_flight_and_sends_fail_fast(setup: tuple[TestNode, HeldStore, Clock]) -> None:
    node, store, clock = setup
    p = node.protection
    store.hold = asyncio.Event()
    stuck = [asyncio.ensure_future(p.store.history(ROOM, limit=5)) for _ in range(4)]
    await asyncio.sleep(0)
    clock.now += 0.6  # older than slow_s, no answer yet
    p.tick(report=False)
    assert p.health() == {"cassandra": "critical"}
    with pytest.raises(Unavailable) as refused:
        p.admit_send("ann", 77, bot=False)
    assert refused.value.retry_after_ms is not None and 0 < refused.value.retry_after_ms <= 1000
    with pytest.raises(Unavailable):
        await p.store.insert_message(message("shielded", 77))  # no request made
    assert store.calls["insert_message"] == 0 and p.counters.sends_shielded == 1
    store.hold.set()
    await asyncio.gather(*stuck)  # their late answers neither end nor extend the fail-fast phase
    assert p.health() == {"cassandra": "critical"}
    clock.now += 1.0
    for _ in range(2):  # the probe round
        await p.store.history(ROOM, limit=5)
    assert p.health() == {"cassandra": "healthy"}
    assert p.admit_send("ann", 77, bot=False) is None
