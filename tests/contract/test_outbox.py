"""The notification outbox contract (chat/store/outbox.py), run against every store adapter.

The Cassandra tests share one keyspace per session: each test works in a time window of its
own (a random day in the past), and claims only from it, so no test sees another's items.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from chat.store.outbox import Notification

DAY_MS = 86_400_000
LEASE_MS = 30_000


@pytest.fixture
def t0() -> int:
    """This test's own start of time: a random millisecond 2 to 400 days ago."""
    return int(time.time() * 1000) - random.randrange(2 * DAY_MS, 400 * DAY_MS)


def note(t0: int, n: int, recipient: str = "bob", body: bytes | None = None) -> Notification:
    return Notification(f"{t0}{n}:{recipient}", recipient, body if body is not None else b'{"n": %d}' % n, t0 + n)


async def claim(store: Any, t0: int, now: int, limit: int = 100, lease_ms: int = LEASE_MS) -> list[Any]:
    return list(await store.outbox_claim(now, limit=limit, lease_ms=lease_ms, oldest_ms=t0))


async def test_claim_returns_due_items_in_order_and_leases_them(store: Any, t0: int) -> None:
    notes = [note(t0, n) for n in (3, 1, 2)]
    await store.outbox_put(notes)
    assert await claim(store, t0, t0) == []  # none due yet (the earliest is due at t0 + 1)
    first = await claim(store, t0, t0 + 2)
    assert [(i.id, i.attempts, i.due_ms) for i in first] == [(note(t0, n).id, 1, t0 + 2 + LEASE_MS) for n in (1, 2)]
    assert [(i.recipient, i.body, i.created_ms) for i in first] == [("bob", b'{"n": 1}', t0 + 1), ("bob", b'{"n": 2}', t0 + 2)]
    # Leased: not returned again before the lease runs out, while the third becomes due.
    assert [i.id for i in await claim(store, t0, t0 + 10)] == [note(t0, 3).id]
    again = await claim(store, t0, t0 + 2 + LEASE_MS)
    assert [(i.id, i.attempts) for i in again] == [(note(t0, 1).id, 2), (note(t0, 2).id, 2)]


async def test_claim_is_bounded_and_takes_the_earliest(store: Any, t0: int) -> None:
    await store.outbox_put([note(t0, n) for n in range(1, 8)])
    now = t0 + 100
    batches = [[i.created_ms - t0 for i in await claim(store, t0, now, limit=3)] for _ in range(3)]
    assert batches == [[1, 2, 3], [4, 5, 6], [7]]
    assert await claim(store, t0, now, limit=3) == []
    assert await claim(store, t0, now, limit=0) == []


async def test_put_is_idempotent_on_the_notification_id(store: Any, t0: int) -> None:
    await store.outbox_put([note(t0, 1)])
    await store.outbox_put([note(t0, 1), note(t0, 1, body=b"other body")])
    (item,) = await claim(store, t0, t0 + 5)
    assert item.body == b'{"n": 1}'
    # A put of a claimed item changes nothing: it stays leased, with its attempts.
    await store.outbox_put([note(t0, 1)])
    assert await claim(store, t0, t0 + 6) == []
    (rescheduled,) = await claim(store, t0, t0 + 5 + LEASE_MS)
    assert rescheduled.attempts == 2
    await store.outbox_reschedule(rescheduled, t0 + 5 + 2 * LEASE_MS)
    # … nor of a rescheduled one.
    await store.outbox_put([note(t0, 1)])
    assert await claim(store, t0, t0 + 5 + 2 * LEASE_MS - 1) == []
    (later,) = await claim(store, t0, t0 + 5 + 2 * LEASE_MS)
    assert (later.id, later.attempts) == (note(t0, 1).id, 3)


async def test_reschedule_moves_the_due_time_and_keeps_attempts(store: Any, t0: int) -> None:
    await store.outbox_put([note(t0, 1), note(t0, 2)])
    items = await claim(store, t0, t0 + 10)
    await store.outbox_reschedule(items[0], t0 + 500)
    await store.outbox_reschedule(items[1], t0 + 400)
    assert await claim(store, t0, t0 + 399) == []
    assert [(i.id, i.attempts) for i in await claim(store, t0, t0 + 450)] == [(note(t0, 2).id, 2)]
    assert [(i.id, i.attempts) for i in await claim(store, t0, t0 + 500)] == [(note(t0, 1).id, 2)]


async def test_delete_removes_for_good(store: Any, t0: int) -> None:
    await store.outbox_put([note(t0, 1), note(t0, 2)])
    first, second = await claim(store, t0, t0 + 10)
    await store.outbox_delete(first)
    await store.outbox_delete(first)  # again: nothing left to delete, no error
    (again,) = await claim(store, t0, t0 + 10 + LEASE_MS)  # only the one left undelivered
    assert (again.id, again.attempts) == (second.id, 2)
    await store.outbox_delete(again)
    assert await claim(store, t0, t0 + 10 + 10 * LEASE_MS) == []


async def test_items_due_before_oldest_are_not_returned(store: Any, t0: int) -> None:
    await store.outbox_put([note(t0, 1), note(t0, 50)])
    items = await store.outbox_claim(t0 + 100, limit=10, lease_ms=LEASE_MS, oldest_ms=t0 + 10)
    assert [i.id for i in items] == [note(t0, 50).id]


async def test_bodies_round_trip_as_bytes(store: Any, t0: int) -> None:
    body = bytes(range(256)) * 40  # not UTF-8, and bigger than a push body gets
    await store.outbox_put([note(t0, 1, recipient="carol.x-1_", body=body)])
    (item,) = await claim(store, t0, t0 + 1)
    assert (item.recipient, item.body) == ("carol.x-1_", body)


async def test_the_outbox_survives_reopening(store_factory: Any, t0: int) -> None:
    first = store_factory()
    await first.open()
    await first.outbox_put([note(t0, 1), note(t0, 2)])
    claimed = await claim(first, t0, t0 + 5, limit=1)
    await first.close()
    second = store_factory()
    await second.open()
    try:
        assert [i.id for i in await claim(second, t0, t0 + 5)] == [note(t0, 2).id]
        both = await claim(second, t0, t0 + 5 + LEASE_MS)  # the lease taken before the reopen held
        assert [(i.id, i.attempts) for i in both] == [(claimed[0].id, 2), (note(t0, 2).id, 2)]
    finally:
        await second.close()
