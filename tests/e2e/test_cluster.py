"""Several real nodes sharing real Cassandra and Redis (services started by scripts/services.sh)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat.store.cassandra import bucket_of
from tests.support import services
from tests.support.client import WsClient
from tests.support.faults import PrivateRedis, TcpProxy
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.cassandra, pytest.mark.redis]


def node(tmp: Path, index: int, redis_url: str = services.REDIS_URL, **env: str) -> ServerProcess:
    return ServerProcess(
        tmp / f"node{index}",
        env={
            **services.cassandra_env(),
            "CHAT_REDIS_URL": redis_url,
            "CHAT_WORKER_ID": str(index),
            "CHAT_CASSANDRA_TIMEOUT_S": "1.0",
            "CHAT_STORE_TIMEOUT_S": "3",
            **env,
        },
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("cluster")
    a, b = node(tmp, 1).start(60), node(tmp, 2).start(60)
    yield a, b
    a.kill()
    b.kill()


def make_channel(server: ServerProcess, owner: str, kind: str, members: list[str]) -> str:
    with server.http(owner) as http:
        if kind == "dm":
            r = http.post("/v1/dms", json={"user": members[0]})
        else:
            r = http.post("/v1/channels", json={"kind": kind, "name": f"{kind} x", "members": members})
        assert r.status_code in (200, 201), r.text
        return r.json()["channel"]["id"]


@pytest.mark.parametrize("kind", ["dm", "group", "room"])
async def test_messages_cross_nodes_in_order(cluster: tuple[ServerProcess, ServerProcess], kind: str) -> None:
    a, b = cluster
    alice, bob = f"alice-{kind}", f"bob-{kind}"
    ch = make_channel(a, alice, kind, [bob])
    async with await WsClient.connect(a.ws_url, a.token(alice)) as on_a, await WsClient.connect(b.ws_url, b.token(bob)) as on_b:
        assert on_a.hello["node_id"] != on_b.hello["node_id"]
        for c in (on_a, on_b):
            assert (await c.request("subscribe", channels=[ch]))["op"] == "subscribed"
        sent = []
        for i in range(30):
            sender = on_a if i % 2 else on_b
            ack = await sender.request("send", channel=ch, text=f"{kind} {i}", client_msg_id=f"{kind}-{i}")
            assert ack["op"] == "ack", ack
            sent.append(ack["message"]["id"])
        for c in (on_a, on_b):
            got = [m["id"] for m in await c.messages(30, ch)]
            assert got == sent  # every message, once, in ID order
    with b.http(bob) as http:
        stored = http.get(f"/v1/channels/{ch}/messages", params={"limit": 100}).json()["messages"]
    assert [m["id"] for m in stored] == sent
    # And they are in Cassandra itself, each in its channel's (channel_id, bucket) partition.
    session = await asyncio.to_thread(services.cql_session, services.TEST_KEYSPACE)
    try:
        for message_id in (sent[0], sent[-1]):
            rows = await asyncio.to_thread(
                session.execute,
                "SELECT body FROM messages WHERE channel_id = %s AND bucket = %s AND message_id = %s",
                (int(ch), bucket_of(int(message_id)), int(message_id)),
            )
            assert [r.body for r in rows] == [stored[sent.index(message_id)]["text"]]
    finally:
        await asyncio.to_thread(session.cluster.shutdown)


async def test_killed_node_loses_no_acked_message(tmp_path: Path, cluster: tuple[ServerProcess, ServerProcess]) -> None:
    _, survivor = cluster
    victim = node(tmp_path, 9).start(60)
    ch = make_channel(survivor, "kim", "group", ["lee"])
    acked: list[str] = []
    twenty_acked = asyncio.Event()

    async def sender() -> None:
        async with await WsClient.connect(victim.ws_url, victim.token("kim")) as c:
            for i in range(10_000):
                frame = await c.request("send", channel=ch, text=f"m{i}", client_msg_id=f"k{i}")
                if frame["op"] == "ack":
                    acked.append(frame["message"]["id"])
                    if len(acked) >= 20:
                        twenty_acked.set()

    task = asyncio.create_task(sender())
    async with await WsClient.connect(survivor.ws_url, survivor.token("lee")) as watcher:
        await watcher.request("subscribe", channels=[ch])
        await watcher.messages(20, ch, timeout=30)  # the stream is flowing through Redis
    # The relayed copy can overtake the ack on its way back to the sender.
    await asyncio.wait_for(twenty_acked.wait(), 30)
    victim.kill()  # SIGKILL mid-stream
    with pytest.raises(Exception):  # noqa: B017 - whichever way the dead node's socket fails
        await asyncio.wait_for(task, 15)
    assert len(acked) >= 20
    with survivor.http("lee") as http:
        ids: list[str] = []
        after = "0"
        while True:
            page = http.get(f"/v1/channels/{ch}/messages", params={"after": after, "limit": 200}).json()
            ids += [m["id"] for m in page["messages"]]
            if not page["has_more"]:
                break
            after = ids[-1]
    assert set(acked) <= set(ids)
    assert ids == sorted(ids, key=int) and len(ids) == len(set(ids))


async def test_redis_restart_mid_stream_recovers_everything(tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path / "redis")
    redis.start()
    a = node(tmp_path, 11, redis.url).start(60)
    b = node(tmp_path, 12, redis.url).start(60)
    try:
        ch = make_channel(a, "rita", "room", ["sam"])
        async with await WsClient.connect(a.ws_url, a.token("rita")) as writer, await WsClient.connect(b.ws_url, b.token("sam")) as reader:
            await reader.request("subscribe", channels=[ch])
            acked: list[str] = []
            for i in range(20):
                acked.append((await writer.request("send", channel=ch, text=f"before {i}", client_msg_id=f"b{i}"))["message"]["id"])
            seen = [m["id"] for m in await reader.messages(20, ch)]
            redis.stop()  # Redis goes away: sends still succeed, because the store is the truth
            for i in range(20):
                frame = await writer.request("send", channel=ch, text=f"during {i}", client_msg_id=f"d{i}")
                assert frame["op"] == "ack", frame
                acked.append(frame["message"]["id"])
            with a.http() as http:
                assert http.get("/readyz").status_code == 503
            redis.start()  # same port: the nodes' relays reconnect by themselves
            await reader.expect("resync", timeout=30, channel=ch)
            recovered = await reader.request("subscribe", channels=[ch], since={ch: seen[-1]})
            assert recovered["op"] == "subscribed"
            seen += [m["id"] for m in await reader.messages(20, ch, timeout=15)]
            for i in range(5):
                acked.append((await writer.request("send", channel=ch, text=f"after {i}", client_msg_id=f"a{i}"))["message"]["id"])
            seen += [m["id"] for m in await reader.messages(5, ch, timeout=15)]
            assert seen == acked
            assert not [f for f in await reader.drain_nothing() if f.get("op") == "message"]
        with a.http() as http:
            assert http.get("/readyz").status_code == 200
    finally:
        a.kill()
        b.kill()
        redis.stop()


async def test_cassandra_outage_gives_unavailable_quickly_and_recovers(tmp_path: Path) -> None:
    """Cassandra stops answering (a proxy that freezes without closing anything, the hardest case
    to notice; the shared Cassandra itself is left alone): sends fail fast with `unavailable`,
    nothing acked is lost, and the retry after recovery stores the message exactly once."""
    host, _, port = services.CASSANDRA_HOSTS.partition(":")
    proxy = await TcpProxy((host, int(port or 9042))).start()
    # Started in a thread: the proxy forwards on this test's event loop, which must keep running.
    a = await asyncio.to_thread(node(tmp_path, 21, CHAT_CASSANDRA_HOSTS=f"127.0.0.1:{proxy.port}").start, 60)
    try:
        ch = await asyncio.to_thread(make_channel, a, "olga", "group", ["pat"])
        async with await WsClient.connect(a.ws_url, a.token("olga")) as c:
            first = await c.request("send", channel=ch, text="before", client_msg_id="o1")
            assert first["op"] == "ack"
            loop = asyncio.get_running_loop()
            proxy.freeze()
            started = loop.time()
            frame = await c.request("send", channel=ch, text="during", client_msg_id="o2", timeout=10)
            took = loop.time() - started
            assert frame["op"] == "error" and frame["code"] == "unavailable", frame
            assert took < 5, f"unavailable took {took:.1f}s"
            async with httpx.AsyncClient(base_url=a.http_url, timeout=10) as http:
                assert (await http.get("/readyz")).status_code == 503
            proxy.thaw()
            deadline = loop.time() + 30
            while True:
                frame = await c.request("send", channel=ch, text="during", client_msg_id="o2", timeout=10)
                if frame["op"] == "ack" or loop.time() > deadline:
                    break
                await asyncio.sleep(0.2)  # Cassandra has no "I am back" event to await: poll, bounded
            assert frame["op"] == "ack", frame
            history = await c.request("history", channel=ch, limit=10)
            assert [m["text"] for m in history["messages"]] == ["before", "during"]
    finally:
        a.kill()
        await proxy.close()
