"""The ZooKeeper registry with several nodes: discovery, rate-limited writes, a SIGKILLed node,
an expired session, a silent ZooKeeper."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from discovery.registry.base import NodeInfo, RegistryView
from discovery.registry.zookeeper import ZooKeeperRegistry
from discovery.zk import ZkConnection
from tests.support.recorder import Recorder
from tests.support.zk import ZkSessions, expire_session

pytestmark = pytest.mark.zookeeper
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def private_sessions(private_zk: Any) -> Any:
    sessions = ZkSessions(private_zk.hosts, chroot="")
    yield sessions
    await sessions.close()


def node(node_id: str, **kw: Any) -> NodeInfo:
    return NodeInfo(node_id, f"ws://{node_id}/v1/ws", 1000, **kw)


def ids(view: RegistryView) -> set[str]:
    return {n.node_id for n in view.nodes}


async def start_registry(conn: ZkConnection, node_id: str, interval_s: float = 0.2) -> tuple[ZooKeeperRegistry, Recorder[RegistryView]]:
    registry = ZooKeeperRegistry(conn, report_interval_s=interval_s)
    views: Recorder[RegistryView] = Recorder()
    registry.subscribe(views)
    await registry.start(node(node_id))
    return registry, views


async def test_three_nodes_see_each_other_and_each_others_load(zk_sessions: Any) -> None:
    started = [await start_registry(await zk_sessions.connect(), f"n{i}") for i in range(3)]
    try:
        for _, views in started:
            await views.until(lambda vs: bool(vs) and ids(vs[-1]) == {"n0", "n1", "n2"}, 5, "all three nodes")
        await started[0][0].report(17)
        await started[1][0].report(0, draining=True)
        expected = {"n0": (17, False), "n1": (0, True), "n2": (0, False)}

        def loads(view: RegistryView) -> dict[str, tuple[int, bool]]:
            return {n.node_id: (n.connections, n.draining) for n in view.nodes}

        for _, views in started:
            await views.until(lambda vs: bool(vs) and loads(vs[-1]) == expected, 5, "the reports to reach everyone")
        views_now = [registry.view() for registry, _ in started]
        assert views_now[0].nodes == views_now[1].nodes == views_now[2].nodes
    finally:
        for registry, _ in started:
            await registry.close()


async def test_a_burst_of_reports_is_at_most_one_write_per_interval(zk_sessions: Any) -> None:
    conn = await zk_sessions.connect()
    registry, views = await start_registry(conn, "burst", interval_s=1.0)
    try:
        stat = await conn.call("exists", "/chat/nodes/burst")
        started = time.monotonic()
        for n in range(1, 201):
            await registry.report(n)
        await views.until(lambda vs: bool(vs) and vs[-1].nodes[0].connections == 200, 3, "the coalesced report")
        after = await conn.call("exists", "/chat/nodes/burst")
        writes = after.version - stat.version
        assert 1 <= writes <= 1 + int((time.monotonic() - started) / 1.0) + 1
    finally:
        await registry.close()


async def test_a_sigkilled_node_vanishes_from_every_view_within_the_session_timeout(private_zk: Any, private_sessions: ZkSessions) -> None:
    session_timeout = 2.0
    watchers = [await start_registry(await private_sessions.connect(session_timeout_s=session_timeout), f"w{i}") for i in range(2)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.zk_node", private_zk.hosts, "victim", str(session_timeout), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        for _, views in watchers:
            await views.until(lambda vs: bool(vs) and "victim" in ids(vs[-1]), 5, "the victim to register")
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        for _, views in watchers:
            await views.until(lambda vs: "victim" not in ids(vs[-1]), session_timeout + 2, "the victim to vanish")
            gone_at = next(t for v, t in zip(views.items, views.times, strict=True) if t > killed_at and "victim" not in ids(v))
            # The server expires it T after it last heard from it (rounded up to its 0.2 s tick).
            assert gone_at - killed_at <= session_timeout + 0.2 + 0.5
        # The same node started again right away waits out its old registration (bounded).
        again = await private_sessions.connect(session_timeout_s=session_timeout)
        replacement = ZooKeeperRegistry(again)
        await asyncio.wait_for(replacement.start(node("victim")), session_timeout + 3)
        await replacement.close()
    finally:
        if proc.returncode is None:
            proc.kill()
        for registry, _ in watchers:
            await registry.close()


async def test_after_its_session_expires_a_node_registers_again_with_its_latest_state(zk_sessions: Any) -> None:
    conn_a = await zk_sessions.connect()
    a, a_views = await start_registry(conn_a, "a")
    b, b_views = await start_registry(await zk_sessions.connect(), "b")
    try:
        await a.report(5, draining=True)
        await b_views.until(lambda vs: bool(vs) and any(n.node_id == "a" and n.draining for n in vs[-1].nodes), 5, "a draining")
        old_session = conn_a.session_id
        await expire_session(conn_a)
        await b_views.until(lambda vs: "a" not in ids(vs[-1]), 5, "a to vanish with its session")
        back = await b_views.until(lambda vs: "a" in ids(vs[-1]), 15, "a to register again")
        assert next(n for n in back.nodes if n.node_id == "a") == node("a", connections=5, draining=True)
        await a_views.until(lambda vs: vs[-1].stale_since is None and ids(vs[-1]) == {"a", "b"}, 5, "a's own view to be live again")
        assert conn_a.session_id not in (None, old_session)
    finally:
        await a.close()
        await b.close()


async def test_a_silent_zookeeper_makes_the_view_stale_and_a_resumed_one_live_again(private_zk: Any, private_sessions: ZkSessions) -> None:
    session_timeout = 3.0
    registry, views = await start_registry(await private_sessions.connect(session_timeout_s=session_timeout), "s")
    try:
        paused_at = time.monotonic()
        private_zk.pause()
        stale = await views.until(lambda vs: vs[-1].stale_since is not None, session_timeout, "the view to turn stale")
        assert stale.stale_since is not None and stale.stale_since <= paused_at  # since the last answer, not since noticed
        assert not registry.view().usable(time.monotonic(), max_stale_s=0.5)
        private_zk.resume()
        live = await views.until(lambda vs: vs[-1].stale_since is None, 3 * session_timeout, "the view to be live again")
        assert ids(live) == {"s"}
    finally:
        private_zk.resume()
        await registry.close()
