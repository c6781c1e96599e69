"""One suite, every adapter: each port's fixture is parametrized over its backends.

The real backends (marked ``cassandra`` / ``redis``) connect to the services that
``scripts/services.sh up`` started (``make test`` does that first). They are never
skipped: if the service is not there, the test fails and says so.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from chat.ids import SnowflakeGenerator
from chat.relay.local import LocalRelay
from chat.store.sqlite import SqliteMessageStore
from tests.support import services

STORE_BACKENDS = ["sqlite", pytest.param("cassandra", marks=pytest.mark.cassandra)]
RELAY_BACKENDS = ["local", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture
def ids() -> SnowflakeGenerator:
    """IDs unique across tests sharing one real backend (random worker per test)."""
    return SnowflakeGenerator(random.randrange(1024))


@pytest.fixture(params=STORE_BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    """Builds a store over the same underlying data each call (to test reopening)."""
    if request.param == "sqlite":
        return lambda: SqliteMessageStore(tmp_path / "chat.sqlite3")
    return services.cassandra_store_factory()


@pytest.fixture
async def store(store_factory: Callable[[], Any]) -> AsyncIterator[Any]:
    s = store_factory()
    await s.open()
    yield s
    await s.close()


@pytest.fixture(params=RELAY_BACKENDS)
def relay_factory(request: pytest.FixtureRequest) -> Callable[[], Any]:
    if request.param == "local":
        return LocalRelay
    return services.redis_relay_factory()


# Discovery: every port's suite runs over its static (embedded) and ZooKeeper adapters.

ZK_BACKENDS = ["static", pytest.param("zookeeper", marks=pytest.mark.zookeeper)]


@pytest.fixture(params=ZK_BACKENDS)
async def zk_sessions(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The backend name, and for "zookeeper" a :class:`ZkSessions` under a chroot of the test's own."""
    if request.param == "static":
        yield None
        return
    from tests.support.zk import ZkSessions

    sessions = ZkSessions()
    yield sessions
    await sessions.close()
