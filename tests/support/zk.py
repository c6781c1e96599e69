"""ZooKeeper connections for tests: one chroot per test, everything closed and deleted after.

On the shared ZooKeeper (``scripts/services.sh``, :2181) every test works under its own
``/chat-test-<random>`` chroot, so tests never see each other's znodes; the tree is
deleted at the end. Fault tests use :class:`tests.support.zk_private.PrivateZooKeeper`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable

from discovery.zk import ZkConnection
from tests.support import services

SESSION_TIMEOUT_S = 4.0  # short, so expiry tests stay short; the shared server allows ≥ 1 s


class ZkSessions:
    """Connections of one test (each one a node's session) under one chroot."""

    def __init__(self, hosts: str = services.ZOOKEEPER_HOSTS, chroot: str | None = None) -> None:
        self.hosts = hosts
        self.chroot = chroot if chroot is not None else "/chat-test-" + uuid.uuid4().hex[:10]
        self.connections: list[ZkConnection] = []

    async def connect(self, *, session_timeout_s: float = SESSION_TIMEOUT_S, **kwargs: float) -> ZkConnection:
        conn = ZkConnection(self.hosts + self.chroot, session_timeout_s=session_timeout_s, connect_timeout_s=10, **kwargs)
        await conn.start()
        self.connections.append(conn)
        return conn

    async def close(self) -> None:
        for conn in self.connections:
            await conn.close()
        self.connections.clear()
        if self.chroot:
            await asyncio.wait_for(asyncio.to_thread(_delete_tree, self.hosts, self.chroot), 30)


def _delete_tree(hosts: str, path: str) -> None:
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoNodeError

    client = KazooClient(hosts=hosts, timeout=5)
    client.start(10)
    try:
        with contextlib.suppress(NoNodeError):
            client.delete(path, recursive=True)
    finally:
        client.stop()
        client.close()


async def expire_session(conn: ZkConnection, timeout: float = 10.0) -> None:
    """Expire ``conn``'s session for real, as kazoo's own test harness does: a second client
    joins the session with its id and password and closes it. The server deletes the
    session's ephemerals at once; ``conn`` sees LOST when it next reaches the server."""
    from kazoo.client import KazooClient

    client = conn._client  # the only way to learn the session password
    assert client is not None and client.client_id is not None, "connection has no live session"
    session_id, password = client.client_id
    hosts = conn.address.hosts

    def hijack_and_close() -> None:
        other = KazooClient(hosts=hosts, client_id=(session_id, password), timeout=conn.session_timeout_s)
        other.start(timeout)
        other.stop()
        other.close()

    await asyncio.wait_for(asyncio.to_thread(hijack_and_close), timeout + 5)


async def wait_for(condition: Callable[[], bool], timeout: float, what: str, *, every: float = 0.02) -> float:
    """Wait (bounded) until ``condition()`` holds; returns the seconds it took.

    Only for states that raise no event (a deadline passing inside a lease, a znode
    vanishing on the server): everything that has an event is awaited on the event.
    """
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic() - start
