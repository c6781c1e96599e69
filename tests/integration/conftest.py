"""Integration fixtures: the real services that ``scripts/services.sh up`` started.

Addresses come from :mod:`tests.support.services`. Tests are marked ``cassandra``/``redis``
and are never skipped: a missing service fails the test and says so. Fault tests never disturb
the shared services: they kill only their own connections (``CLIENT KILL ID``), or run a
private ``redis-server`` / a TCP proxy of their own that they may stop, pause and restart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import services
from tests.support.faults import PrivateRedis, TcpProxy
from tests.support.sink import Sink

# Cassandra


def cassandra_settings(**env: str) -> Any:
    from chat.config import from_env

    return from_env({**services.cassandra_env(), "CHAT_JWT_SECRET": "x" * 32, **env})


@pytest.fixture
async def cassandra_store() -> AsyncIterator[Any]:
    from chat.store.cassandra import CassandraMessageStore

    store = CassandraMessageStore.from_settings(cassandra_settings())
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def cql(cassandra_store: Any) -> AsyncIterator[Callable[..., Awaitable[list[Any]]]]:
    """``await cql(query, params)`` on the (migrated) test keyspace, off the event loop."""
    session = await asyncio.to_thread(services.cql_session, services.TEST_KEYSPACE)

    async def run(query: str, params: Any = None) -> list[Any]:
        return list(await asyncio.to_thread(session.execute, query, params))

    yield run
    await asyncio.to_thread(session.cluster.shutdown)


@pytest.fixture
async def tcp_proxy() -> AsyncIterator[Callable[[tuple[str, int]], Awaitable[TcpProxy]]]:
    proxies: list[TcpProxy] = []

    async def make(target: tuple[str, int]) -> TcpProxy:
        proxy = await TcpProxy(target).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.close()


# Redis


@pytest.fixture
async def relays() -> AsyncIterator[Callable[..., Awaitable[tuple[Any, Sink]]]]:
    """``await relays(url=None, prefix=None, **kw)`` → a started RedisRelay and its Sink.

    Relays of one test share a topic namespace (they are nodes of one cluster) unless a
    prefix is given; each has a unique client name so a test can find its connections."""
    from chat.relay.redis import RedisRelay

    namespace = "it" + uuid.uuid4().hex[:8] + ":"
    started: list[Any] = []

    async def make(url: str | None = None, prefix: str | None = None, **kwargs: Any) -> tuple[Any, Sink]:
        relay = RedisRelay(url or services.REDIS_URL, prefix=namespace if prefix is None else prefix, name=f"it-{uuid.uuid4().hex[:10]}", **kwargs)
        sink = Sink()
        await relay.start(sink.deliver, sink.on_gap)
        started.append(relay)
        return relay, sink

    yield make
    for relay in started:
        await relay.close()


@pytest.fixture
async def redis_admin() -> AsyncIterator[Any]:
    """A plain client on the shared Redis, for CLIENT LIST / CLIENT KILL of our own connections."""
    from redis.asyncio import Redis

    client = Redis.from_url(services.REDIS_URL, decode_responses=True, socket_timeout=2)
    yield client
    await client.aclose()


async def kill_clients(admin: Any, name: str) -> int:
    """Kill the connections named ``name`` (and only those); returns how many."""
    ids = [c["id"] for c in await admin.client_list() if c.get("name") == name]
    for cid in ids:
        await admin.execute_command("CLIENT", "KILL", "ID", cid)
    return len(ids)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


# ZooKeeper


@pytest.fixture
async def private_zk(tmp_path: Path) -> AsyncIterator[Any]:
    """A throwaway ZooKeeper of this test's own (pause, restart, kill at will)."""
    from tests.support.zk_private import PrivateZooKeeper

    server = PrivateZooKeeper(tmp_path / "zk")
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.kill)


@pytest.fixture
async def zk_sessions() -> AsyncIterator[Any]:
    """Sessions on the shared ZooKeeper, under a chroot of the test's own."""
    from tests.support.zk import ZkSessions

    sessions = ZkSessions()
    yield sessions
    await sessions.close()
