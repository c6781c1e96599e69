"""The WaitingRooms contract (chat/waiting/base.py), run against the in-memory and the Redis adapter.

Both take the test's clock (Redis: as the scripts' "now" instead of the server's TIME), so the
clock seconds that slots are counted in are the test's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chat.waiting.base import Admitted, Full, LineRules, Queued, WaitingRooms
from chat.waiting.memory import MemoryWaitingRooms
from tests.support import services

RULES = LineRules(budget_per_s=3, max_queue=5, ticket_ttl_s=10.0, entry_ttl_s=20.0)
ROOM = 4242


class Clock:
    def __init__(self) -> None:
        self.now = 1000.25  # seconds; slots are whole seconds of it

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def rooms_factory(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Callable[[], WaitingRooms]]:
    """Each call: the rooms as another node (or a restarted one) sees them."""
    made: list[Any] = []
    if request.param == "memory":
        shared = MemoryWaitingRooms(clock=clock)  # one process: a "second node" is the same object

        def make() -> WaitingRooms:
            return shared
    else:
        from chat.waiting.redis import RedisWaitingRooms

        prefix = f"t{uuid.uuid4().hex[:8]}:wr:"

        def make() -> WaitingRooms:
            rooms = RedisWaitingRooms(services.REDIS_URL, prefix=prefix, clock=clock)
            made.append(rooms)
            return rooms

    yield make
    for rooms in made:
        await rooms.close()


@pytest.fixture
def rooms(rooms_factory: Callable[[], WaitingRooms]) -> WaitingRooms:
    return rooms_factory()


async def test_arrivals_past_the_budget_queue_and_are_admitted_in_order_within_each_second(rooms: WaitingRooms, clock: Clock) -> None:
    answers = [await rooms.arrive(ROOM, f"u{i}", RULES) for i in range(7)]
    assert [type(a) for a in answers[:3]] == [Admitted] * 3  # nobody waits and the second has slots
    assert answers[3:] == [Queued(1), Queued(2), Queued(3), Queued(4)]
    assert await rooms.admit(ROOM, RULES) == ([], pytest.approx(0.75))  # this second is spent
    clock.now = 1001.5
    admitted, wait = await rooms.admit(ROOM, RULES)
    assert [a.user for a in admitted] == ["u3", "u4", "u5"] and wait == pytest.approx(0.5)
    assert all(a.expires_in_ms == 10_000 for a in admitted)
    assert await rooms.position(ROOM, "u6") == 1
    assert await rooms.arrive(ROOM, "late", RULES) == Queued(2)  # someone waits: no jumping the line
    clock.now = 1002.0
    admitted, wait = await rooms.admit(ROOM, RULES)
    assert [a.user for a in admitted] == ["u6", "late"] and wait is None
    assert len({a.ticket for a in admitted}) == 2


async def test_joins_redeemed_at_once_still_count_against_their_second(rooms: WaitingRooms, clock: Clock) -> None:
    for user in ("a", "b", "c"):
        admitted = await rooms.arrive(ROOM, user, RULES)
        assert isinstance(admitted, Admitted) and await rooms.redeem(ROOM, user, admitted.ticket)
    assert await rooms.arrive(ROOM, "d", RULES) == Queued(1)
    clock.now += 1.0
    admitted_now, _ = await rooms.admit(ROOM, RULES)
    assert [a.user for a in admitted_now] == ["d"]


async def test_a_ticket_lets_its_user_in_once_before_it_expires(rooms: WaitingRooms, clock: Clock) -> None:
    first = await rooms.arrive(ROOM, "ann", RULES)
    assert isinstance(first, Admitted)
    assert await rooms.arrive(ROOM, "ann", RULES) == Admitted(first.ticket, 10_000)  # arriving again: the same ticket
    assert not await rooms.redeem(ROOM, "bob", first.ticket)  # not bob's
    assert not await rooms.redeem(ROOM, "ann", "999999")
    assert await rooms.redeem(ROOM, "ann", first.ticket)
    assert not await rooms.redeem(ROOM, "ann", first.ticket)  # once
    clock.now = 1010.0
    late = await rooms.arrive(ROOM, "cat", RULES)
    assert isinstance(late, Admitted)
    clock.now += 10.0
    assert not await rooms.redeem(ROOM, "cat", late.ticket)  # expired


async def test_arriving_again_keeps_the_place_and_a_full_line_refuses_with_a_hint(rooms: WaitingRooms) -> None:
    for i in range(3):
        await rooms.arrive(ROOM, f"in{i}", RULES)
    for i in range(5):
        assert await rooms.arrive(ROOM, f"q{i}", RULES) == Queued(i + 1)
    assert await rooms.arrive(ROOM, "q2", RULES) == Queued(3)
    refused = await rooms.arrive(ROOM, "one-too-many", RULES)
    assert isinstance(refused, Full) and refused.retry_after_ms >= 1000  # 5 waiting at 3/s
    assert await rooms.cancel(ROOM, "q0") and not await rooms.cancel(ROOM, "q0")
    assert await rooms.position(ROOM, "q0") is None and await rooms.position(ROOM, "q1") == 1


async def test_a_place_not_refreshed_lapses_and_is_skipped(rooms: WaitingRooms, clock: Clock) -> None:
    for i in range(3):
        await rooms.arrive(ROOM, f"in{i}", RULES)
    await rooms.arrive(ROOM, "gone", RULES)
    await rooms.arrive(ROOM, "stays", RULES)
    clock.now += 15.0
    await rooms.arrive(ROOM, "stays", RULES)  # refreshed
    clock.now += 10.0  # "gone" last arrived 25 s ago: lapsed
    admitted, _ = await rooms.admit(ROOM, RULES)
    assert [a.user for a in admitted] == ["stays"]


async def test_nodes_admitting_at_once_stay_in_order_and_within_the_budget(rooms_factory: Callable[[], WaitingRooms], clock: Clock) -> None:
    a, b = rooms_factory(), rooms_factory()
    rules = LineRules(budget_per_s=4, max_queue=1000, ticket_ttl_s=10, entry_ttl_s=60)
    for i in range(4):
        await a.arrive(ROOM, f"now{i}", rules)
    for i in range(20):
        assert await (a if i % 2 else b).arrive(ROOM, f"w{i:02}", rules) == Queued(i + 1)
    order: list[str] = []
    for second in range(1, 6):
        clock.now = 1000.0 + second
        batches = await asyncio.gather(*(node.admit(ROOM, rules) for node in (a, b, a, b)))
        got = [x.user for admitted, _ in batches for x in admitted]
        assert len(got) == 4, f"second {second}: {got}"
        order += got
    assert sorted(order) == order == [f"w{i:02}" for i in range(20)]
