"""The pipelined publisher (chat/relay/redis_publisher.py) against real redis-server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from chat.errors import Unavailable
from chat.relay.redis_publisher import RedisPublisher
from tests.integration.conftest import PrivateRedis
from tests.support import services

pytestmark = pytest.mark.redis


async def test_concurrent_publishes_arrive_in_call_order(relays: Any) -> None:
    a, _ = await relays()
    b, sink_b = await relays()
    await b.subscribe("c:1")
    # 2,000 calls in flight at once on the one connection.
    await asyncio.gather(*(a.publish("c:1", b"%d" % i) for i in range(2000)))
    await sink_b.wait_for(2000)
    assert [int(p) for p in sink_b.payloads("c:1")] == list(range(2000))


async def test_password_from_the_url_and_a_wrong_one(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, "--requirepass", "s3cret-pw")
    server.start()
    try:
        good = RedisPublisher(f"redis://:s3cret-pw@127.0.0.1:{server.port}/0", client_name="t-pub")
        await good.ping()
        await good.publish(b"c:1", b"x")
        await good.close()
        bad = RedisPublisher(f"redis://:wrong@127.0.0.1:{server.port}/0", client_name="t-pub")
        with pytest.raises(Unavailable) as refused:
            await bad.publish(b"c:1", b"x")
        assert "wrong" not in str(refused.value) and "refused" in str(refused.value)
        await bad.close()
    finally:
        server.stop()


async def test_a_redis_that_stops_reading_fails_calls_within_the_bound(private_redis: PrivateRedis) -> None:
    publisher = RedisPublisher(private_redis.url, client_name="t-pub", reply_timeout_s=0.5, max_in_flight=50)
    await publisher.ping()
    private_redis.pause()
    try:
        started = time.monotonic()
        calls = [asyncio.ensure_future(publisher.publish(b"c:1", b"%d" % i)) for i in range(60)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        elapsed = time.monotonic() - started
        assert all(isinstance(r, Unavailable) for r in results)
        # Past max_in_flight the call is refused at once, not queued.
        assert sum("not keeping up" in str(r) for r in results) == 10
        assert elapsed < 2
    finally:
        private_redis.resume()
    await publisher.ping()  # reconnected on demand
    await publisher.close()


async def test_nothing_listening_fails_fast(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path)  # a free port with nothing on it
    publisher = RedisPublisher(server.url, client_name="t-pub")
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await publisher.ping()
    assert time.monotonic() - started < 1
    await publisher.close()


async def test_after_a_connect_timeout_calls_fail_at_once_until_the_backoff_ends(tcp_proxy: Any) -> None:
    host, port = services.REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    proxy = await tcp_proxy((host, int(port)))
    publisher = RedisPublisher(f"redis://127.0.0.1:{proxy.port}/0", client_name="t-pub", connect_timeout_s=1.0, reply_timeout_s=1.0)
    proxy.freeze()  # connects are accepted, nothing is answered: the handshake times out (≥ 1 s)
    with pytest.raises(Unavailable, match="TimeoutError"):
        await publisher.ping()
    started = time.monotonic()
    with pytest.raises(Unavailable, match="reconnecting"):
        await publisher.ping()  # within the backoff: no attempt, so no 1 s wait
    assert time.monotonic() - started < 0.5
    proxy.thaw()
    publisher.retry_now()  # what the relay does when its pub/sub connection is back
    await publisher.ping()
    await publisher.close()


async def test_a_refused_connect_is_retried_on_the_next_call(private_redis: PrivateRedis) -> None:
    publisher = RedisPublisher(private_redis.url, client_name="t-pub")
    await publisher.ping()
    await asyncio.to_thread(private_redis.stop)
    for _ in range(3):
        with pytest.raises(Unavailable):
            await publisher.ping()
    await asyncio.to_thread(private_redis.start)
    await publisher.ping()  # no backoff to wait out: the first call after the restart works
    await publisher.close()


async def test_hand_offs_before_the_connection_exists_keep_their_order(relays: Any) -> None:
    """The first hand-offs of a publisher queue behind its one connection attempt and are
    written in hand-off order once it is up (the same path as after a lost connection)."""
    b, sink_b = await relays()
    await b.subscribe("c:1")
    publisher = RedisPublisher(services.REDIS_URL, client_name="t-pub")
    channel = b._prefix + b"c:1"
    confirmations = [publisher.hand_off(channel, b"%d" % i) for i in range(300)]  # nothing connected yet
    await asyncio.gather(*confirmations)
    await sink_b.wait_for(300)
    assert [int(p) for p in sink_b.payloads("c:1")] == list(range(300))
    await publisher.close()
