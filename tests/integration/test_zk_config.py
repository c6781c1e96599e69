"""Dynamic configuration across nodes on a real ZooKeeper: propagation, and after a restart."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from discovery.config.schema import ConfigSnapshot, Schema, Setting
from discovery.config.zookeeper import ZooKeeperConfigStore
from discovery.zk import ConnEvent, ConnState
from tests.support.recorder import Recorder
from tests.support.zk import ZkSessions

pytestmark = pytest.mark.zookeeper
SCHEMA = Schema([Setting("hot_send_per_s", float, 20.0, "sends/s that make a room hot", minimum=0.1, maximum=1e6)])


async def stores(sessions: ZkSessions, n: int) -> list[tuple[ZooKeeperConfigStore, Recorder[ConfigSnapshot]]]:
    out = []
    for _ in range(n):
        store = ZooKeeperConfigStore(await sessions.connect(), SCHEMA)
        await store.start()
        seen: Recorder[ConfigSnapshot] = Recorder()
        store.subscribe(seen)
        out.append((store, seen))
    return out


async def test_a_change_reaches_every_other_node_within_a_second(zk_sessions: ZkSessions) -> None:
    nodes = await stores(zk_sessions, 3)
    try:
        for round_ in range(3):
            writer = nodes[round_][0]
            value = 30.0 + round_
            started = time.monotonic()
            await writer.set({"hot_send_per_s": value})
            for _, seen in nodes:
                await seen.until(lambda s, v=value: bool(s) and s[-1]["hot_send_per_s"] == v, 1.0, f"{value} to arrive")
            assert time.monotonic() - started < 1.0
    finally:
        for store, _ in nodes:
            await store.close()


async def test_changes_still_arrive_after_zookeeper_restarts(private_zk: Any) -> None:
    sessions = ZkSessions(private_zk.hosts, chroot="")
    nodes = await stores(sessions, 2)
    states: Recorder[ConnEvent] = Recorder()
    sessions.connections[0].subscribe(states)
    try:
        await asyncio.to_thread(private_zk.restart)  # kazoo drops every watch on the way: they must come back
        await states.until(lambda s: bool(s) and s[-1].state is ConnState.CONNECTED, 15, "a to reconnect")
        (a, _), (_, seen_b) = nodes
        await a.set({"hot_send_per_s": 77})
        await seen_b.until(lambda s: bool(s) and s[-1]["hot_send_per_s"] == 77.0, 5.0, "the change after the restart")
    finally:
        for store, _ in nodes:
            await store.close()
        await sessions.close()
