"""chat.protect with a hand-moved clock: which rooms are hot, on every node, as settings change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chat.errors import RateLimited, Throttled
from chat.hot.detector import SEND
from chat.models import Channel, ChannelKind
from tests.support.protect import Bus, Clock, TestNode, settle, sqlite

ROOM, QUIET = 111, 222


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[TestNode, TestNode, Clock]]:
    clock, bus, store = Clock(), Bus(), await sqlite(tmp_path)
    for room in (ROOM, QUIET):
        await store.create_channel(Channel(room, ChannelKind.ROOM, "r", "ann", 0), ["ann"])
    settings = {"hot_send_per_s": 20.0, "hot_cool_s": 2.0, "hot_room_send_per_s": 10.0, "hot_room_send_burst": 5}
    a = await TestNode("a", bus, clock, store).start(**settings)
    b = await TestNode("b", bus, clock, store).start(**settings)
    yield a, b, clock
    await a.close()
    await b.close()
    await store.close()


async def tick(node: TestNode, *, report: bool = False) -> None:
    """One tick, then the loop runs what it started (a hot channel's kind is read once)."""
    node.protection.tick(report=report)
    await settle()  # reports delivered over the bus
    await node.protection.rooms.confirmed()


def send(node: TestNode, room: int, n: int, user: str = "u") -> int:
    """Offer ``n`` sends; how many were admitted (the rest throttled)."""
    admitted = 0
    for _ in range(n):
        try:
            assert node.protection.admit_send(user, room, bot=False) is None
            admitted += 1
        except Throttled as refused:
            assert refused.retry_after_ms is not None and refused.retry_after_ms >= 1
    return admitted


async def test_a_room_over_its_threshold_turns_hot_and_is_limited_while_a_quiet_room_is_not(pair: tuple[TestNode, TestNode, Clock]) -> None:
    a, _, clock = pair
    assert send(a, ROOM, 30) == 30  # not hot yet: nothing refused
    send(a, QUIET, 2)
    clock.now += 0.25
    await tick(a, report=False)
    assert a.protection.rooms.protected(ROOM) and not a.protection.rooms.protected(QUIET)
    assert send(a, ROOM, 20) == 5  # its burst, then throttled
    assert send(a, QUIET, 20) == 20
    assert a.protection.counters.sends_throttled == 15 and a.protection.counters.rooms_heated == 1
    view = a.protection.snapshot()[0]
    assert view.channel == ROOM and view.hot and view.throttled and view.send_per_s >= 20 and view.hot_since_ms is not None


async def test_a_room_hot_through_one_node_is_hot_on_the_other_after_one_report(pair: tuple[TestNode, TestNode, Clock]) -> None:
    a, b, clock = pair
    for _ in range(4):  # 4 × 6 = 24 sends/s through node a only
        send(a, ROOM, 6)
        clock.now += 0.25
        await tick(a, report=True)
        await tick(b, report=False)
    assert a.protection.rooms.protected(ROOM)
    assert b.protection.rooms.protected(ROOM), "b never saw a send of the room, only a's reports"
    assert b.protection.counters.reports_received >= 1 and a.protection.counters.reports_sent >= 1
    send(b, QUIET, 3)  # nothing else is reported by b: its only room is below its floor
    clock.now += 0.25
    await tick(b, report=True)
    assert b.protection.counters.reports_sent == 0 or QUIET not in {v.channel for v in a.protection.snapshot()}


async def test_a_threshold_changed_at_run_time_applies_at_the_next_tick(pair: tuple[TestNode, TestNode, Clock]) -> None:
    a, _, clock = pair
    send(a, ROOM, 12)
    clock.now += 0.25
    await tick(a, report=False)
    assert not a.protection.rooms.protected(ROOM)  # 12/s < 20/s
    await a.config.set({"hot_send_per_s": 10.0})
    assert a.protection.rooms.detector.thresholds.hot_send_per_s == 10.0
    await tick(a, report=False)
    assert a.protection.rooms.protected(ROOM)


async def test_a_hot_room_cools_only_after_staying_quiet_for_hot_cool_s(pair: tuple[TestNode, TestNode, Clock]) -> None:
    a, _, clock = pair
    send(a, ROOM, 30)
    clock.now += 0.25
    await tick(a, report=False)
    assert a.protection.rooms.protected(ROOM)
    stopped = clock.now  # no more sends from here
    while a.protection.rooms.protected(ROOM):
        clock.now += 0.25
        await tick(a, report=False)
        assert clock.now - stopped < 10, "never cooled"
    # Rates leave the window within two 1 s buckets; then hot_cool_s (2 s) below the cool line.
    assert 2.0 <= clock.now - stopped <= 2.0 + 2.0 + 0.25
    assert a.protection.counters.rooms_cooled == 1
    assert send(a, ROOM, 20) == 20  # its limit is gone with it


async def test_a_pin_holds_on_every_node_until_unpinned(pair: tuple[TestNode, TestNode, Clock]) -> None:
    a, b, _ = pair
    await a.protection.pin(QUIET, True)
    await settle()
    await b.protection.rooms.confirmed()
    assert a.protection.rooms.protected(QUIET) and b.protection.rooms.protected(QUIET)
    await b.protection.pin(QUIET, None)
    await settle()
    assert not a.protection.rooms.protected(QUIET) and not b.protection.rooms.protected(QUIET)


async def test_only_rooms_are_protected_however_hot_a_dm_or_group_gets(pair: tuple[TestNode, TestNode, Clock], tmp_path: Path) -> None:
    a, _, clock = pair
    group = 333
    await a.protection.store.create_channel(Channel(group, ChannelKind.GROUP, "g", "ann", 0), ["ann"])
    send(a, group, 60)
    send(a, ROOM, 60)
    clock.now += 0.25
    await tick(a)
    assert a.protection.rooms.protected(ROOM) and not a.protection.rooms.protected(group)
    assert send(a, group, 60) == 60  # never throttled, never batched
    assert not a.protection.batched(group) and a.protection.typing(group)


async def test_bots_have_their_own_per_user_limit(pair: tuple[TestNode, TestNode, Clock]) -> None:
    a, _, _ = pair
    await a.config.set({"bot_send_per_s": 1.0, "bot_send_burst": 3})
    for _ in range(3):
        assert a.protection.admit_send("robot", QUIET, bot=True) is None
    with pytest.raises(RateLimited) as refused:
        a.protection.admit_send("robot", QUIET, bot=True)
    assert refused.value.retry_after_ms is not None and refused.value.retry_after_ms > 0
    assert a.protection.admit_send("human", QUIET, bot=False) is None  # people are not bots
    assert a.protection.rooms.detector.local_rates(QUIET, a.protection.rooms._clock())[SEND] > 0
