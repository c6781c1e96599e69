"""chat.protect's join gate with a hand-moved clock: a hot room's waiting room, in order and within
its budget, its frames on the users' topics, and the plain join limit with the waiting room off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from chat.errors import Throttled
from chat.models import Channel, ChannelKind
from tests.support.protect import Bus, Clock, Sink, TestNode, settle, sqlite

ROOM = 9009


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[TestNode, Clock]]:
    clock, store = Clock(1000.5), await sqlite(tmp_path)
    await store.create_channel(Channel(ROOM, ChannelKind.ROOM, "r", "owner", 0), ["owner"])
    node = await TestNode("n", Bus(), clock, store).start(hot_room_join_per_s=2)
    await node.protection.pin(ROOM, True)
    yield node, clock
    await node.close()
    await store.close()


async def frames_of(node: TestNode, users: list[str]) -> dict[str, Sink]:
    sinks = {u: Sink(u) for u in users}
    for sink in sinks.values():
        await node.hub.join_user(sink)
    return sinks


def told(sink: Sink) -> list[dict[str, object]]:
    return [orjson.loads(frame.data) for kind, _, frame in sink.frames if kind == "control"]


async def test_joins_over_the_budget_wait_in_line_and_are_admitted_in_order_with_tickets(node: tuple[TestNode, Clock]) -> None:
    n, clock = node
    users = [f"u{i}" for i in range(6)]
    sinks = await frames_of(n, users)
    gate = n.protection.joins
    positions = {}
    for user in users:
        try:
            await gate.join(user, ROOM, None)
            positions[user] = 0
        except Throttled as refused:
            assert refused.retry_after_ms is not None and refused.extra["channel"] == str(ROOM)
            positions[user] = refused.extra["position"]
    assert positions == {"u0": 0, "u1": 0, "u2": 1, "u3": 2, "u4": 3, "u5": 4}
    await settle()
    assert told(sinks["u3"]) == [{"op": "waiting", "type": "waiting", "channel": str(ROOM), "position": 2}]
    admitted: list[str] = []
    for second in (1, 2):
        clock.now = 1000.0 + second
        await gate._pass(ROOM)  # the room's admission timer
        await settle()
        admitted += [u for u in users[2:] if any(f["op"] == "admitted" for f in told(sinks[u])) and u not in admitted]
        assert len(admitted) == 2 * second  # at most the budget per second
    assert admitted == ["u2", "u3", "u4", "u5"]  # arrival order
    ticket = next(f for f in told(sinks["u2"]) if f["op"] == "admitted")
    assert ticket["expires_in_ms"] == 30_000
    await gate.join("u2", ROOM, str(ticket["ticket"]))  # the repeated join with the ticket is let in
    await gate.join("u3", ROOM, None)  # so is a plain repeat: an admitted user gets their ticket back
    c = n.protection.counters
    assert c.joins_queued == 4 and c.admissions == 4 and c.joins_admitted == 4


async def test_a_room_that_cools_lets_its_whole_line_in(node: tuple[TestNode, Clock]) -> None:
    n, _ = node
    sinks = await frames_of(n, ["a", "b", "c", "d", "e"])
    for user in sinks:
        try:
            await n.protection.joins.join(user, ROOM, None)
        except Throttled:
            pass
    await n.protection.pin(ROOM, False)
    await settle()
    for user in ("c", "d", "e"):
        assert any(f["op"] == "admitted" for f in told(sinks[user]))
    await n.protection.joins.join("f", ROOM, None)  # not protected: no line at all


async def test_with_the_waiting_room_off_a_hot_rooms_joins_are_limited_per_second(node: tuple[TestNode, Clock]) -> None:
    n, clock = node
    await n.config.set({"hot_waiting_room": False})
    gate = n.protection.joins
    await gate.join("a", ROOM, None)
    await gate.join("b", ROOM, None)
    with pytest.raises(Throttled) as refused:
        await gate.join("c", ROOM, None)
    assert refused.value.retry_after_ms is not None and "position" not in refused.value.extra
    clock.now += 0.5
    await gate.join("c", ROOM, None)


async def test_switching_the_waiting_room_off_lets_its_line_in(node: tuple[TestNode, Clock]) -> None:
    n, _ = node
    sinks = await frames_of(n, ["a", "b", "c", "d"])
    for user in sinks:
        try:
            await n.protection.joins.join(user, ROOM, None)
        except Throttled:
            pass
    await n.config.set({"hot_waiting_room": False})
    await settle()
    assert all(any(f["op"] == "admitted" for f in told(sinks[u])) for u in ("c", "d"))
