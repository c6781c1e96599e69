"""Leader election with several participants on a real ZooKeeper: hand-over, failover, silence."""

from __future__ import annotations

import time
from typing import Any

import pytest

from discovery.leader.zookeeper import ZooKeeperElection
from discovery.zk import ConnEvent, ConnState
from tests.support.faults import TcpProxy
from tests.support.recorder import Recorder
from tests.support.zk import ZkSessions

pytestmark = pytest.mark.zookeeper
T = 2.0


async def participants(sessions: ZkSessions, hosts: list[str] | None = None) -> list[tuple[ZooKeeperElection, Recorder[bool]]]:
    out = []
    for i, host in enumerate(hosts or [sessions.hosts] * 3):
        conn = await ZkSessions(host, chroot=sessions.chroot).connect(session_timeout_s=T)
        sessions.connections.append(conn)
        election = ZooKeeperElection(conn, "sweeper", identifier=f"p{i}")
        changes: Recorder[bool] = Recorder()
        election.subscribe(changes)
        await election.start()
        out.append((election, changes))
    return out


def leaders(group: list[tuple[ZooKeeperElection, Recorder[bool]]]) -> list[int]:
    return [i for i, (e, _) in enumerate(group) if e.is_leader]


async def test_exactly_one_leads_and_a_resigning_leader_hands_over(zk_sessions: ZkSessions) -> None:
    group = await participants(zk_sessions)
    try:
        assert leaders(group) == [0]  # the first to join leads
        await group[0][0].close()
        await group[1][1].until(lambda c: c == [True], 2, "the next in line to lead")
        assert leaders(group) == [1]
        await group[1][0].close()
        await group[2][1].until(lambda c: c == [True], 2, "the last one to lead")
        assert leaders(group) == [2]
    finally:
        for election, _ in group:
            await election.close()


async def test_when_the_leaders_session_expires_the_next_takes_over_within_the_timeout(private_zk: Any) -> None:
    proxy = await TcpProxy(("127.0.0.1", private_zk.port)).start()
    sessions = ZkSessions(private_zk.hosts, chroot="")
    group = await participants(sessions, [f"127.0.0.1:{proxy.port}", private_zk.hosts, private_zk.hosts])
    try:
        assert leaders(group) == [0]
        frozen_at = time.monotonic()
        proxy.freeze()  # the leader's packets stop: its session expires on the server after T
        await group[0][1].until(lambda c: c[-1] is False, T, "the old leader to step down")
        await group[1][1].until(lambda c: c == [True], T + 2, "the next in line to lead")
        stepped_down, took_over = group[0][1].times[-1], group[1][1].times[-1]
        assert stepped_down < took_over, "two leaders at once"
        assert took_over - frozen_at <= T + 1.0
        assert leaders(group) == [1]
        states: Recorder[ConnEvent] = Recorder()
        old_session = sessions.connections[0].session_id
        sessions.connections[0].subscribe(states)
        proxy.thaw()  # the old leader learns its session is gone and joins at the end of the line
        await states.until(lambda s: any(e.state is ConnState.CONNECTED and e.session_id != old_session for e in s), 3 * T, "a new session")
        assert leaders(group) == [1]
    finally:
        proxy.thaw()
        for election, _ in group:
            await election.close()
        await sessions.close()
        await proxy.close()


async def test_a_silent_zookeeper_makes_the_leader_step_down_then_lead_again(private_zk: Any) -> None:
    sessions = ZkSessions(private_zk.hosts, chroot="")
    group = await participants(sessions, [private_zk.hosts])
    election, changes = group[0]
    try:
        paused_at = time.monotonic()
        private_zk.pause()
        await changes.until(lambda c: c[-1] is False, T, "the leader to step down")
        assert changes.times[-1] - paused_at <= 0.8 * T + 0.3  # before the session could expire
        private_zk.resume()
        await changes.until(lambda c: c[-1] is True, 3 * T, "leading again on the same session")
        assert election.is_leader
    finally:
        private_zk.resume()
        await election.close()
        await sessions.close()
