"""The ZooKeeper worker-ID lease under real faults, on a private ZooKeeper of each test's own:
SIGSTOP, restart, and a node's own connection frozen until its session expires.

Validity is checked honestly: every holder runs in this process and records when it was
valid on one monotonic clock (the lease's events say when a change took effect); no two
holders may ever be valid for the same worker ID at the same time, and every (worker ID,
millisecond) pair a holder was allowed to mint at belongs to one holder only.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from discovery.lease.base import LeaseEvent
from discovery.lease.mint import FloorRecord, MintAt, ReservePolicy
from discovery.lease.zookeeper import ZooKeeperWorkerLease
from discovery.zk import ZkConnection
from tests.support.faults import TcpProxy
from tests.support.recorder import Recorder

pytestmark = pytest.mark.zookeeper

T = 2.0  # session timeout of every holder (s): short, so faults play out quickly
MARGIN = 0.2 * T
FAST = ReservePolicy(ahead_ms=1000, refresh_below_ms=500)  # takeovers wait ≤ 1 s for the floor


async def connect(hosts: str) -> ZkConnection:
    conn = ZkConnection(hosts, session_timeout_s=T, connect_timeout_s=10, op_timeout_s=1.0)
    await conn.start()
    return conn


async def test_suspended_lease_turns_invalid_within_the_documented_bound_then_recovers(private_zk: Any) -> None:
    conn = await connect(private_zk.hosts)
    lease = ZooKeeperWorkerLease(conn, "a", policy=FAST)
    events: Recorder[LeaseEvent] = Recorder()
    lease.subscribe(events)
    try:
        worker_id = await lease.acquire()
        await asyncio.sleep(0.3)  # let a heartbeat or two land: the bound counts from the last one
        paused_at = time.monotonic()
        private_zk.pause()
        lapse = await events.until(lambda e: not e[-1].valid, T, "the lease to lapse")
        assert not lease.valid()
        # Documented bound: invalid at most T - margin after the last answered request, which
        # was sent before the pause; the server cannot expire the session before T after it.
        assert lapse.at <= paused_at + T - MARGIN
        assert lapse.at <= conn.last_good + T - MARGIN + 1e-6
        assert events.times[-1] - paused_at <= T - MARGIN + 0.3  # and noticed promptly
        assert lapse.worker_id == worker_id  # lapsed, not lost: the session may still be alive
        private_zk.resume()
        back = await events.until(lambda e: e[-1].valid, 3 * T, "the lease to be confirmed again")
        assert back.worker_id == worker_id and lease.valid()
    finally:
        private_zk.resume()
        await lease.close()
        await conn.close()


async def test_after_a_real_expiry_the_id_passes_to_another_holder_without_overlap(private_zk: Any) -> None:
    proxy = await TcpProxy(("127.0.0.1", private_zk.port)).start()
    conn_a = await connect(f"127.0.0.1:{proxy.port}")
    conn_b = await connect(private_zk.hosts)
    a = ZooKeeperWorkerLease(conn_a, "a", preferred=5, policy=FAST)
    b = ZooKeeperWorkerLease(conn_b, "b", preferred=5, policy=FAST)
    a_events: Recorder[LeaseEvent] = Recorder()
    b_events: Recorder[LeaseEvent] = Recorder()
    a.subscribe(a_events)
    b.subscribe(b_events)
    try:
        assert await a.acquire() == 5
        deleted, watcher = conn_b.one_shot()
        await conn_b.call("exists", "/chat/workers/5", watch=watcher)
        frozen_at = time.monotonic()
        proxy.freeze()  # a's packets stop reaching the server: its session expires there after T
        await asyncio.wait_for(deleted, T + 3)
        expired_after = time.monotonic() - frozen_at
        assert T - 0.5 <= expired_after <= T + 2  # the server expired it: not earlier than its timeout
        reserved_by_a = a.reserved_until_ms
        assert await b.acquire() == 5
        assert not a.valid(), "a was still valid when b took worker 5"
        assert b.floor_ms >= reserved_by_a
        a_end = next((e.at for e in a_events.items if not e.valid), None)
        b_start = b_events.items[0].at
        assert a_end is not None and a_end < b_start, "a never said it stopped being valid before b started"
        proxy.thaw()  # a learns its session is gone, and takes another ID
        regained = await a_events.until(lambda e: e[-1].valid, 3 * T + 5, "a to lease again")
        assert regained.worker_id not in (None, 5)
    finally:
        proxy.thaw()
        for lease in (a, b):
            await lease.close()
        for conn in (conn_a, conn_b):
            await conn.close()
        await proxy.close()


@dataclass
class Holder:
    name: str
    proxy: TcpProxy
    conn: ZkConnection
    lease: ZooKeeperWorkerLease
    intervals: list[tuple[int, float, float]] = field(default_factory=list)  # (worker, valid from, until)
    open_since: tuple[int, float] | None = None
    floor_violations: list[str] = field(default_factory=list)


async def test_randomized_faults_never_let_two_holders_share_a_worker_id(private_zk: Any) -> None:
    rng = random.Random(7)
    reserved_seen: dict[int, int] = {}  # worker → highest reservation any holder was allowed to mint under
    minted: dict[tuple[int, int], str] = {}  # (worker, ms) → the holder that was allowed to mint there
    clashes: list[str] = []
    holders: list[Holder] = []

    def on_event(holder: Holder, event: LeaseEvent) -> None:
        if event.valid and holder.open_since is None:
            assert event.worker_id is not None
            floor, earlier = holder.lease.floor_ms, reserved_seen.get(event.worker_id, 0)
            if event.previous_worker_id is None and floor < earlier:
                holder.floor_violations.append(f"{holder.name} took {event.worker_id} with floor {floor} below {earlier}")
            holder.open_since = (event.worker_id, event.at)
        elif not event.valid and holder.open_since is not None:
            worker, since = holder.open_since
            holder.intervals.append((worker, since, event.at))
            holder.open_since = None

    for i in range(3):
        proxy = await TcpProxy(("127.0.0.1", private_zk.port)).start()
        conn = await connect(f"127.0.0.1:{proxy.port}")
        # Every holder wants worker 0: after each mass expiry they race for it.
        holder = Holder(f"h{i}", proxy, conn, ZooKeeperWorkerLease(conn, f"h{i}", preferred=0, policy=FAST))
        holder.lease.subscribe(lambda e, h=holder: on_event(h, e))
        holders.append(holder)
        await holder.lease.acquire()

    async def mint_continuously(holder: Holder) -> None:
        while True:
            decision = holder.lease.decide()
            worker = holder.lease.worker_id
            if isinstance(decision, MintAt) and worker is not None:
                reserved_seen[worker] = max(reserved_seen.get(worker, 0), holder.lease.reserved_until_ms)
                other = minted.setdefault((worker, decision.ms), holder.name)
                if other != holder.name:
                    clashes.append(f"worker {worker} ms {decision.ms}: {other} and {holder.name}")
            await asyncio.sleep(0.005)

    minters = [asyncio.create_task(mint_continuously(h)) for h in holders]
    faults: list[str] = []
    try:
        for _cycle in range(20):
            kind = rng.choice(["pause", "pause", "restart", "freeze", "freeze"])
            hold = rng.uniform(0.3, 1.6) * T
            faults.append(f"{kind} {hold:.1f}s")
            if kind == "pause":
                private_zk.pause()
                await asyncio.sleep(hold)  # the fault's duration is the experiment
                private_zk.resume()
            elif kind == "restart":
                await asyncio.to_thread(private_zk.restart)
            else:
                victim = rng.choice(holders)
                victim.proxy.freeze()
                await asyncio.sleep(hold)
                victim.proxy.thaw()
            await asyncio.sleep(rng.uniform(0.3, 1.0))
        # Every holder ends up holding a lease again, each a different worker ID.
        deadline = time.monotonic() + 6 * T
        while not all(h.lease.valid() for h in holders):
            assert time.monotonic() < deadline, f"not every holder recovered after {faults}"
            await asyncio.sleep(0.05)
        assert len({h.lease.worker_id for h in holders}) == 3
    finally:
        for task in minters:
            task.cancel()
        await asyncio.gather(*minters, return_exceptions=True)
        for h in holders:
            h.proxy.thaw()
            await h.lease.close()
            await h.conn.close()
            await h.proxy.close()

    spans = sorted((w, start, end, h.name) for h in holders for (w, start, end) in h.intervals)
    overlaps = [
        f"worker {w1}: {n1} [{s1:.3f}, {e1:.3f}] and {n2} [{s2:.3f}, {e2:.3f}]"
        for i, (w1, s1, e1, n1) in enumerate(spans)
        for (w2, s2, e2, n2) in spans[i + 1 :]
        if w1 == w2 and n1 != n2 and s2 < e1
    ]
    assert not overlaps, f"overlapping leases after faults {faults}: {overlaps}"
    assert not clashes, clashes[:5]
    assert not [v for h in holders for v in h.floor_violations]
    takeovers = {w for w in {s[0] for s in spans} if len({s[3] for s in spans if s[0] == w}) > 1}
    assert takeovers, f"no worker ID ever changed hands: the faults {faults} tested nothing"
    assert len(minted) > 1000
    check = await connect(private_zk.hosts)
    try:
        for worker, seen in reserved_seen.items():
            data, _ = await check.call("get", f"/chat/worker-floors/{worker}")
            assert FloorRecord.decode(data).reserved_until_ms >= seen  # floors never went backwards
    finally:
        await check.close()
