"""The composed discovery of a node, embedded and on ZooKeeper: start order, assignment, data-dir lock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from discovery.config.schema import Schema, Setting
from discovery.errors import DataDirInUse
from discovery.lease.mint import MintAt
from discovery.node import Discovery, DiscoverySettings

SCHEMA = Schema([Setting("hot_send_per_s", float, 20.0, "sends/s that make a room hot", minimum=0.1)])


def settings(zk_sessions: Any, data_dir: Path, node_id: str) -> DiscoverySettings:
    hosts = "" if zk_sessions is None else zk_sessions.hosts + zk_sessions.chroot
    return DiscoverySettings(node_id=node_id, url=f"ws://{node_id}/v1/ws", data_dir=data_dir, zookeeper_hosts=hosts, session_timeout_s=4.0)


async def test_a_started_node_can_mint_is_assignable_and_has_its_config(zk_sessions: Any, tmp_path: Path) -> None:
    node = await Discovery.start(settings(zk_sessions, tmp_path / "a", "a"), SCHEMA)
    try:
        assert node.lease.valid() and isinstance(node.lease.decide(), MintAt)
        assert node.assign("alice").node_id == "a"
        assert node.config.get("hot_send_per_s") == 20.0
        election = await node.election("presence-sweeper")
        assert election.is_leader
    finally:
        await node.close(last_minted_ms=None)
    assert not node.lease.valid() and node.registry.view().nodes == ()


async def test_a_second_process_on_the_same_data_dir_is_refused_in_one_line(zk_sessions: Any, tmp_path: Path) -> None:
    first = await Discovery.start(settings(zk_sessions, tmp_path / "same", "a"), SCHEMA)
    try:
        with pytest.raises(DataDirInUse) as refused:
            await Discovery.start(settings(zk_sessions, tmp_path / "same", "b"), SCHEMA)
        assert str(refused.value).startswith(f"data dir {tmp_path / 'same'} is in use by another chat node (pid ")
    finally:
        await first.close()
