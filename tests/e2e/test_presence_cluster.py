"""Presence across two real nodes sharing Cassandra and Redis: pushes cross nodes, both nodes
answer alike, an abrupt drop goes offline after the timeout and a short one does not flap."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cluster import make_channel, node
from tests.support.client import WsClient
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.cassandra, pytest.mark.redis]

HEARTBEAT_S, TIMEOUT_S = 0.5, 3.0  # a margin of six heartbeats: heartbeat writes batch every 0.5 s, on a loaded machine
PRESENCE = {"CHAT_PRESENCE_HEARTBEAT_S": str(HEARTBEAT_S), "CHAT_PRESENCE_TIMEOUT_S": str(TIMEOUT_S)}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("presence")
    a, b = node(tmp, 11, **PRESENCE).start(60), node(tmp, 12, **PRESENCE).start(60)
    yield a, b
    a.kill()
    b.kill()


def uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def presence_of(server: ServerProcess, asker: str, user: str) -> dict[str, object]:
    with server.http(asker) as http:
        return http.get("/v1/presence", params={"user": user}).json()["users"][user]  # type: ignore[no-any-return]


async def heartbeats(client: WsClient, stop: asyncio.Event, sent: list[float]) -> None:
    while not stop.is_set():
        await client.send("heartbeat")
        sent.append(time.monotonic())
        try:
            await asyncio.wait_for(stop.wait(), HEARTBEAT_S)
        except TimeoutError:
            pass


async def test_a_watcher_on_one_node_sees_a_user_on_the_other_come_and_go(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    alice, bob = uid("alice"), uid("bob")
    dm = make_channel(a, alice, "dm", [bob])
    async with await WsClient.connect(b.ws_url, b.token(bob)) as watcher:
        await watcher.request("subscribe", "subscribed", channels=[dm])
        started = time.monotonic()
        user = await WsClient.connect(a.ws_url, a.token(alice))
        online = await watcher.expect("presence", timeout=5, user=alice)
        assert online["status"] == "online" and time.monotonic() - started < 3
        assert presence_of(a, bob, alice)["status"] == presence_of(b, bob, alice)["status"] == "online"
        await user.close()  # a clean close: offline at once
        offline = await watcher.expect("presence", timeout=5, user=alice)
        assert offline["status"] == "offline" and isinstance(offline["last_seen"], int)
        assert presence_of(a, bob, alice) == presence_of(b, bob, alice) == {"status": "offline", "last_seen": offline["last_seen"]}


async def test_an_abrupt_drop_goes_offline_after_the_timeout_and_a_short_one_does_not_flap(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    alice, bob = uid("alice"), uid("bob")
    dm = make_channel(a, alice, "dm", [bob])
    async with await WsClient.connect(b.ws_url, b.token(bob)) as watcher:
        await watcher.request("subscribe", "subscribed", channels=[dm])
        phone = await WsClient.connect(a.ws_url, a.token(alice))
        await watcher.expect("presence", timeout=5, user=alice, status="online")
        # A short drop (a tunnel): the connection dies without a close frame, and the phone is
        # back on the other node well within the timeout. No offline, ever.
        phone.conn.transport.abort()
        stop = asyncio.Event()
        back = await WsClient.connect(b.ws_url, b.token(alice))
        beats: list[float] = []
        beating = asyncio.create_task(heartbeats(back, stop, beats))
        try:
            quiet = await watcher.drain_nothing(2 * TIMEOUT_S)
            assert [f for f in quiet if f.get("op") == "presence" and f.get("status") == "offline"] == []
            # Now a drop with no return: offline within the timeout plus a sweep (and slack).
            stop.set()
            await beating
            back.conn.transport.abort()
            offline = await watcher.expect("presence", timeout=TIMEOUT_S + 5, user=alice, status="offline")
            assert time.monotonic() - beats[-1] >= TIMEOUT_S - 0.2  # not before the timeout since the last heartbeat
            assert isinstance(offline["last_seen"], int)
        finally:
            stop.set()
            beating.cancel()


@pytest.mark.zookeeper
async def test_the_sweeper_moves_when_its_leader_dies(tmp_path: Path) -> None:
    """One sweeper per cluster, elected through ZooKeeper: kill the node that leads (the first
    started) and presence keeps expiring devices — a user who drops off is offline within the
    timeout plus the session timeout (the election's takeover) and a sweep."""
    from tests.support import services

    hosts = f"{services.ZOOKEEPER_HOSTS}/chat-sweep-{secrets.token_hex(4)}"
    # A short presence timeout (1.5 s, nobody heartbeats here) well inside the 4 s session.
    fast = {"CHAT_PRESENCE_HEARTBEAT_S": "0.5", "CHAT_PRESENCE_TIMEOUT_S": "1.5"}
    zk = {"CHAT_ZOOKEEPER_HOSTS": hosts, "CHAT_ZOOKEEPER_SESSION_TIMEOUT_S": "4", **fast}
    # Presence of its own (Redis database 3): the module's other nodes run without ZooKeeper,
    # so each of them sweeps the shared database — as it should, but not in this test.
    redis = services.REDIS_URL.rsplit("/", 1)[0] + "/3" if services.REDIS_URL.count("/") > 2 else services.REDIS_URL + "/3"
    leader = node(tmp_path, 51, redis_url=redis, **zk).start(60)
    other = node(tmp_path, 52, redis_url=redis, **zk).start(60)
    try:
        alice, bob = uid("alice"), uid("bob")
        dm = make_channel(other, alice, "dm", [bob])
        async with await WsClient.connect(other.ws_url, other.token(bob)) as watcher:
            await watcher.request("subscribe", "subscribed", channels=[dm])
            user = await WsClient.connect(other.ws_url, other.token(alice))
            await watcher.expect("presence", timeout=5, user=alice, status="online")
            assert leader.proc is not None
            leader.proc.send_signal(signal.SIGSTOP)  # the sweeper freezes; its session runs out in 4 s
            user.conn.transport.abort()  # alice drops off without a close
            # Only the (frozen) leader sweeps: nothing expires her while its session lives...
            quiet = await watcher.drain_nothing(1.5 + 1.5)
            assert [f for f in quiet if f.get("op") == "presence" and f.get("status") == "offline"] == []
            # ...then the other node wins the election and expires her.
            offline = await watcher.expect("presence", timeout=4 + 10, user=alice, status="offline")
            assert isinstance(offline["last_seen"], int)
    finally:
        if leader.proc is not None and leader.proc.poll() is None:
            leader.proc.send_signal(signal.SIGCONT)
        leader.kill()
        other.kill()
