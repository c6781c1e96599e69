"""LeaderElection contract, one participant: the same suite over the static and ZooKeeper adapters.
(Several participants, failover and faults: tests/integration/test_zk_leader.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from discovery.leader.base import LeaderElection
from discovery.leader.static import StaticElection
from discovery.leader.zookeeper import ZooKeeperElection
from tests.support.recorder import Recorder


@pytest.fixture
async def make_election(zk_sessions: Any) -> AsyncIterator[Callable[[], Awaitable[LeaderElection]]]:
    made: list[LeaderElection] = []

    async def make() -> LeaderElection:
        election: LeaderElection = StaticElection() if zk_sessions is None else ZooKeeperElection(await zk_sessions.connect(), "sweeper", identifier="n1")
        made.append(election)
        return election

    yield make
    for election in made:
        await election.close()


async def test_a_lone_participant_leads_once_started(make_election: Callable[[], Awaitable[LeaderElection]]) -> None:
    election = await make_election()
    changes: Recorder[bool] = Recorder()
    election.subscribe(changes)
    assert not election.is_leader
    await election.start()
    assert election.is_leader
    assert changes.items == [True]


async def test_close_resigns_tells_listeners_and_is_idempotent(make_election: Callable[[], Awaitable[LeaderElection]]) -> None:
    election = await make_election()
    changes: Recorder[bool] = Recorder()
    await election.start()
    unsubscribe = election.subscribe(changes)
    await election.close()
    await election.close()
    assert not election.is_leader and changes.items == [False]
    unsubscribe()
