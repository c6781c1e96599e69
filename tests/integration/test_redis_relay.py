"""RedisRelay against real Redis: several nodes, lost connections, a Redis that goes away."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from chat.errors import Unavailable
from tests.integration.conftest import PrivateRedis, kill_clients

pytestmark = pytest.mark.redis


async def test_two_nodes_see_each_others_messages_in_order(relays: Any) -> None:
    a, sink_a = await relays()
    b, sink_b = await relays()
    await a.subscribe("c:1")
    await b.subscribe("c:1")
    for i in range(200):
        await (a if i % 2 else b).publish("c:1", b"%d" % i)
    for sink in (sink_a, sink_b):
        await sink.wait_for(200)
        got = [int(p) for p in sink.payloads("c:1")]
        # Per publisher, publish order; every message once (publishes were sequential: total order).
        assert got == list(range(200))


async def test_only_subscribed_nodes_receive(relays: Any) -> None:
    a, sink_a = await relays()
    b, sink_b = await relays()
    await b.subscribe("c:2")
    await a.publish("c:3", b"nobody")
    await a.publish("c:2", b"for b")
    await sink_b.wait_for(1)
    await a.subscribe("c:2")  # a marker round trip on a's own connection
    await a.publish("c:2", b"both")
    await sink_a.wait_for(1)
    assert sink_a.got == [("c:2", b"both")]
    await sink_b.wait_for(2)
    assert sink_b.got == [("c:2", b"for b"), ("c:2", b"both")]


async def test_prefix_isolates_namespaces(relays: Any) -> None:
    a, sink_a = await relays(prefix="nsA:")
    b, sink_b = await relays(prefix="nsB:")
    await a.subscribe("c:9")
    await b.subscribe("c:9")
    await b.publish("c:9", b"b only")
    await a.publish("c:9", b"a only")
    await sink_a.wait_for(1)
    await sink_b.wait_for(1)
    assert sink_a.got == [("c:9", b"a only")] and sink_b.got == [("c:9", b"b only")]


async def test_killed_pubsub_connection_reconnects_resubscribes_and_reports_a_gap(relays: Any, redis_admin: Any) -> None:
    a, sink_a = await relays()
    b, _ = await relays()
    await a.subscribe("c:1")
    await a.subscribe("u:alice")
    await b.publish("c:1", b"before")
    await sink_a.wait_for(1)

    # A real fault on a's pub/sub connection only (CLIENT KILL TYPE pubsub would hit other users).
    assert await kill_clients(redis_admin, f"{a.name}-sub") == 1
    # Publishing meanwhile either works or fails fast: it never hangs.
    started = time.monotonic()
    try:
        await a.publish("c:1", b"during")
    except Unavailable:
        pass
    assert time.monotonic() - started < 3

    await sink_a.until(lambda: {"c:1", "u:alice"} <= set(sink_a.gaps), timeout=10)
    await a.ping()
    await b.publish("c:1", b"after")
    await b.publish("u:alice", b"after too")
    await sink_a.until(lambda: (("u:alice", b"after too")) in sink_a.got)
    assert sink_a.got[0] == ("c:1", b"before")
    assert sink_a.got[-2:] == [("c:1", b"after"), ("u:alice", b"after too")]


async def test_killed_publisher_connection_is_replaced(relays: Any, redis_admin: Any) -> None:
    a, sink_a = await relays()
    await a.subscribe("c:1")
    await a.publish("c:1", b"one")
    await sink_a.wait_for(1)
    assert await kill_clients(redis_admin, f"{a.name}-pub") >= 1
    started = time.monotonic()
    try:
        await a.publish("c:1", b"maybe")
    except Unavailable:
        pass
    assert time.monotonic() - started < 3
    await a.publish("c:1", b"three")
    await sink_a.until(lambda: ("c:1", b"three") in sink_a.got)


async def test_redis_restart_mid_stream(relays: Any, private_redis: PrivateRedis) -> None:
    a, sink_a = await relays(private_redis.url)
    b, sink_b = await relays(private_redis.url)
    await a.subscribe("c:1")
    await b.subscribe("c:1")
    await a.publish("c:1", b"1")
    await sink_b.wait_for(1)

    await asyncio.to_thread(private_redis.stop)
    for call in (lambda: a.publish("c:1", b"lost"), a.ping):
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await call()
        assert time.monotonic() - started < 3

    await asyncio.to_thread(private_redis.start)  # same port, empty server: no subscriptions
    await sink_a.until(lambda: "c:1" in sink_a.gaps, timeout=15)
    await sink_b.until(lambda: "c:1" in sink_b.gaps, timeout=15)
    await a.ping()
    await a.publish("c:1", b"2")
    await sink_b.until(lambda: sink_b.payloads("c:1") == [b"1", b"2"])
    await sink_a.until(lambda: sink_a.payloads("c:1") == [b"1", b"2"])


async def test_a_paused_redis_makes_calls_fail_fast_then_recovers(relays: Any, private_redis: PrivateRedis) -> None:
    a, sink_a = await relays(private_redis.url, health_interval_s=0.3)
    await a.subscribe("c:1")
    private_redis.pause()  # SIGSTOP: sockets stay open, nothing answers
    try:
        for call in (lambda: a.publish("c:1", b"x"), a.ping):
            started = time.monotonic()
            with pytest.raises(Unavailable):
                await call()
            assert time.monotonic() - started < 4
    finally:
        private_redis.resume()
    # The silent pub/sub connection was declared dead by its PING; the relay came back by itself.
    await sink_a.until(lambda: "c:1" in sink_a.gaps, timeout=15)
    await a.publish("c:1", b"y")
    await sink_a.until(lambda: ("c:1", b"y") in sink_a.got)


async def test_start_fails_fast_when_redis_is_not_there(relays: Any) -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await relays("redis://127.0.0.1:1/0")
    assert time.monotonic() - started < 3


async def test_subscribe_while_disconnected_waits_for_the_reconnect(relays: Any, private_redis: PrivateRedis) -> None:
    a, sink_a = await relays(private_redis.url, subscribe_timeout_s=10)
    await asyncio.to_thread(private_redis.stop)
    subscribing = asyncio.ensure_future(a.subscribe("c:7"))
    done, _ = await asyncio.wait({subscribing}, timeout=0.3)  # bounded wait for what must NOT happen
    assert not done
    await asyncio.to_thread(private_redis.start)
    await asyncio.wait_for(subscribing, 10)
    await a.publish("c:7", b"hi")
    await sink_a.until(lambda: ("c:7", b"hi") in sink_a.got)


async def test_unsubscribe_then_resubscribe_in_call_order(relays: Any) -> None:
    a, sink_a = await relays()
    await asyncio.gather(a.subscribe("c:1"), a.unsubscribe("c:1"), a.subscribe("c:1"), a.subscribe("c:2"), a.unsubscribe("c:2"))
    await a.publish("c:2", b"gone")
    await a.publish("c:1", b"here")
    await sink_a.wait_for(1)
    assert sink_a.got == [("c:1", b"here")]


async def test_close_while_reconnecting_is_prompt(relays: Any, private_redis: PrivateRedis) -> None:
    from chat.relay.redis import RedisRelay

    relay = RedisRelay(private_redis.url, prefix="x:")
    await relay.start(lambda t, p: None, lambda ts: None)
    await relay.subscribe("c:1")
    await asyncio.to_thread(private_redis.stop)
    with pytest.raises(Unavailable):
        await relay.ping()
    await asyncio.wait_for(relay.close(), 3)


async def test_a_message_whose_publish_failed_reaches_other_nodes_as_a_gap(relays: Any, tcp_proxy: Any, tmp_path: Any) -> None:
    """Node A reaches Redis through a proxy that freezes; node B stays connected. A's send is
    stored and acked although its publish failed, and once A's Redis is back B learns of the
    gap (its sockets get `resync`) instead of never hearing of that message."""
    from chat import commands, events
    from chat.access import Access
    from chat.channels import ChannelService
    from chat.minter import FixedWorker, IdMinter
    from chat.models import Principal
    from chat.service import MessageLimits, MessageService
    from chat.store.sqlite import SqliteMessageStore
    from tests.support import services

    host, port = services.REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    proxy = await tcp_proxy((host, int(port)))
    a, _ = await relays(f"redis://127.0.0.1:{proxy.port}", connect_timeout_s=0.3, socket_timeout_s=0.3)
    b, sink_b = await relays()
    store = SqliteMessageStore(tmp_path / "a.sqlite3")
    await store.open()
    minter, access = IdMinter(FixedWorker(3)), Access(store)
    service = MessageService(store=store, relay=a, minter=minter, access=access, limits=MessageLimits())
    channels = ChannelService(store=store, relay=a, minter=minter, access=access, group_max_members=100)
    try:
        alice = Principal("alice")
        channel = (await channels.create(alice, commands.CreateChannel("group", "g", ()))).channel
        await b.subscribe(f"c:{channel.id}")
        await service.send(alice, commands.Send(None, channel.id, "live", "k0"))
        await sink_b.wait_for(1)

        proxy.freeze()
        started = time.monotonic()
        _, created = await service.send(alice, commands.Send(None, channel.id, "stored, not published", "k1"))
        assert created and time.monotonic() - started < 3  # stored, so acked, without waiting on Redis
        assert service.gaps_owed == 1
        proxy.thaw()

        # (The frozen PUBLISH itself may still come through after the thaw; the gap must.)
        def kinds() -> list[tuple[str, int]]:
            return [(e.kind, e.channel) for e in (events.unpack(p) for _, p in sink_b.got)]

        await sink_b.until(lambda: (events.GAP, channel.id) in kinds(), timeout=15)
        page = await service.history(alice, commands.History(None, channel.id, None, None, 10))
        assert [m.text for m in page.messages] == ["live", "stored, not published"]
    finally:
        await service.close()
        await store.close()
