"""Two nodes' composed discovery on one ZooKeeper: distinct worker IDs, the same assignments."""

from __future__ import annotations

from pathlib import Path

import pytest

from discovery.config.schema import Schema
from discovery.node import Discovery, DiscoverySettings
from discovery.registry.base import RegistryView
from tests.support.recorder import Recorder
from tests.support.zk import ZkSessions

pytestmark = pytest.mark.zookeeper


async def test_two_nodes_get_distinct_worker_ids_and_assign_alike(zk_sessions: ZkSessions, tmp_path: Path) -> None:
    def settings(node_id: str) -> DiscoverySettings:
        hosts = zk_sessions.hosts + zk_sessions.chroot
        return DiscoverySettings(node_id=node_id, url=f"ws://{node_id}/v1/ws", data_dir=tmp_path / node_id, zookeeper_hosts=hosts, session_timeout_s=4.0)

    a = await Discovery.start(settings("a"), Schema([]))
    views: Recorder[RegistryView] = Recorder()
    a.registry.subscribe(views)
    b = await Discovery.start(settings("b"), Schema([]))
    try:
        assert a.lease.worker_id != b.lease.worker_id
        await views.until(lambda vs: bool(vs) and len(vs[-1].nodes) == 2, 5, "a to see b")
        users = [f"u{i}" for i in range(200)]
        placed = [a.assign(u).node_id for u in users]
        assert placed == [b.assign(u).node_id for u in users]
        assert set(placed) == {"a", "b"}
    finally:
        await b.close()
        await a.close()
