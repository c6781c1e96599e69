"""WorkerLease contract: the same suite over the static (data-dir) and ZooKeeper adapters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from discovery.errors import DataDirInUse
from discovery.lease.base import LeaseEvent, WorkerLease
from discovery.lease.core import wall_clock_ms
from discovery.lease.mint import MintAt, Refuse, ReservePolicy, Wait
from discovery.lease.static import StaticWorkerLease
from discovery.lease.zookeeper import ZooKeeperWorkerLease
from tests.support.recorder import Recorder
from tests.support.zk import wait_for

STATIC_WORKER_ID = 7


class Holders:
    """Builds leases of separate "processes" over one backing store, and crashes them."""

    def __init__(self, sessions: Any, data_dir: Path) -> None:
        self.sessions = sessions  # None: static adapter
        self.data_dir = data_dir
        self.leases: list[Any] = []
        self.conns: dict[int, Any] = {}

    async def make(self, *, preferred: int | None = None, clock_ms: Callable[[], int] = wall_clock_ms, policy: ReservePolicy | None = None) -> WorkerLease:
        lease: Any
        if self.sessions is None:
            lease = StaticWorkerLease(self.data_dir, STATIC_WORKER_ID, holder="t", clock_ms=clock_ms, policy=policy)
        else:
            conn = await self.sessions.connect()
            lease = ZooKeeperWorkerLease(conn, f"node-{len(self.leases)}", preferred=preferred, clock_ms=clock_ms, policy=policy)
            self.conns[id(lease)] = conn
        self.leases.append(lease)
        return lease

    async def crash(self, lease: Any) -> None:
        """The holder dies without a clean close (no last-minted mark is left)."""
        if self.sessions is None:
            # What process death does: no more writes, and the kernel drops the flock.
            lease._refresher.cancel()
            lease._lock.release()
            lease._held = False
        else:
            await self.conns[id(lease)].close()  # the session ends: its ephemerals vanish at once
            await lease.close()

    async def close(self) -> None:
        for lease in self.leases:
            await lease.close()


@pytest.fixture
async def holders(zk_sessions: Any, tmp_path: Path) -> AsyncIterator[Holders]:
    h = Holders(zk_sessions, tmp_path / "data")
    yield h
    await h.close()


async def test_acquire_gives_a_valid_lease_with_durable_time_reserved_ahead(holders: Holders) -> None:
    lease = await holders.make()
    assert not lease.valid()
    assert isinstance(lease.decide(), Refuse)
    worker_id = await lease.acquire()
    now = wall_clock_ms()
    assert 0 <= worker_id <= 1023 and lease.worker_id == worker_id
    assert lease.valid()
    assert lease.floor_ms < now < lease.reserved_until_ms
    assert lease.decide(now) == MintAt(now)
    assert isinstance(lease.decide(lease.reserved_until_ms + 1), Refuse)


async def test_two_live_holders_never_share_a_worker_id(holders: Holders) -> None:
    a, b = await holders.make(), await holders.make()
    first = await a.acquire()
    try:
        second = await b.acquire()
    except DataDirInUse as exc:  # static: one process per data dir, said in one line
        assert "is in use by another chat node (pid" in str(exc) and "\n" not in str(exc)
        return
    assert second != first and a.valid() and b.valid()


async def test_events_announce_acquire_and_close(holders: Holders) -> None:
    lease = await holders.make()
    events: Recorder[LeaseEvent] = Recorder()
    lease.subscribe(events)
    worker_id = await lease.acquire()
    assert events.items == [LeaseEvent(True, worker_id, None)]
    await lease.close()
    assert events.items[-1] == LeaseEvent(False, None, worker_id)
    assert not lease.valid() and isinstance(lease.decide(), Refuse)


async def test_after_a_crash_the_same_id_starts_above_its_reservation_even_with_the_clock_far_behind(holders: Holders) -> None:
    a = await holders.make()
    worker_id = await a.acquire()
    reserved = a.reserved_until_ms
    await holders.crash(a)
    behind_ms = 120_000
    b = await holders.make(preferred=worker_id, clock_ms=lambda: wall_clock_ms() - behind_ms)
    assert await b.acquire() == worker_id
    assert b.floor_ms >= reserved
    decision = b.decide()
    assert isinstance(decision, Refuse) and "behind" in decision.reason
    assert b.decide(b.floor_ms) == Wait(1)  # at the floor itself: never
    assert b.reserved_until_ms >= reserved


async def test_a_clean_close_lets_the_next_holder_start_right_after_the_last_minted_ms(holders: Holders) -> None:
    a = await holders.make()
    worker_id = await a.acquire()
    last = wall_clock_ms()
    await a.close(last_minted_ms=last)
    b = await holders.make(preferred=worker_id)
    assert await b.acquire() == worker_id
    assert b.floor_ms == last
    assert b.decide(last + 1) == MintAt(last + 1)


async def test_a_too_low_last_minted_mark_never_lowers_the_floor(holders: Holders) -> None:
    a = await holders.make()
    worker_id = await a.acquire()
    await a.close(last_minted_ms=wall_clock_ms())
    b = await holders.make(preferred=worker_id)
    await b.acquire()
    floor_b = b.floor_ms
    await b.close(last_minted_ms=0)  # claims it minted nothing newer than what a left
    c = await holders.make(preferred=worker_id)
    await c.acquire()
    assert c.floor_ms >= floor_b


async def test_the_reservation_moves_ahead_of_the_clock_and_survives_a_crash(holders: Holders) -> None:
    lease = await holders.make(policy=ReservePolicy(ahead_ms=600, refresh_below_ms=450))
    worker_id = await lease.acquire()
    first = lease.reserved_until_ms
    # No event exists for "a reservation was written": poll it, bounded.
    await wait_for(lambda: lease.reserved_until_ms > first + 100, 5.0, "the reservation to be extended")
    extended = lease.reserved_until_ms
    await holders.crash(lease)
    nxt = await holders.make(preferred=worker_id)
    assert await nxt.acquire() == worker_id
    assert nxt.floor_ms >= extended


async def test_close_is_idempotent_and_the_id_is_free_again(holders: Holders) -> None:
    a = await holders.make()
    worker_id = await a.acquire()
    await a.close()
    await a.close()
    b = await holders.make(preferred=worker_id)
    assert await asyncio.wait_for(b.acquire(), 10) == worker_id
