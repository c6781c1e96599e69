"""Presence on real Redis: round trips per batch, two nodes, leadership, outages, secrets.

Round trips are counted on a private ``redis-server`` of this test (``INFO commandstats``
deltas), which is also the one paused for outages; the shared Redis only serves tests that
neither count nor break anything, each under a key prefix of its own. Presence time is the
injected clock: nothing here waits for the 30 s timeout.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from presence.state import OFFLINE, ONLINE, DeviceEvent, Transition, UserPresence
from presence.store import redis_scripts
from presence.store.base import PresenceUnavailable
from presence.store.redis import RedisPresenceStore
from presence.tracker import PresenceTracker
from tests.support import services
from tests.support.faults import PrivateRedis
from tests.support.presence import (
    T0,
    CountingStore,
    FakeClock,
    Transitions,
    redis_store,
    unique_prefix,
)

pytestmark = pytest.mark.redis

TIMEOUT_MS = 30_000


# Redis counts the commands a script runs too: leave those out to count what clients sent.
INSIDE_SCRIPTS = {
    name.lower() for name in re.findall(r"redis\.call\('([A-Z]+)'", redis_scripts.APPLY + redis_scripts.EXPIRE)
}


async def client_calls(admin: Redis) -> dict[str, int]:
    """Commands clients sent since the last CONFIG RESETSTAT, without our own INFO/RESETSTAT."""
    stats = await admin.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    return {name: n for name, n in calls.items() if name not in {"info", "config|resetstat", *INSIDE_SCRIPTS}}


@pytest.fixture
async def admin(private_redis: PrivateRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(private_redis.url, decode_responses=True, socket_timeout=5)
    yield client
    await client.aclose()


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def start_tracker(stack: AsyncExitStack, store: Any, **kwargs: Any) -> PresenceTracker:
    tracker = PresenceTracker(store, **kwargs)
    await tracker.start()
    stack.push_async_callback(tracker.close)
    return tracker


async def test_heartbeats_of_10k_sockets_cost_one_round_trip_per_flush(
    private_redis: PrivateRedis, admin: Redis, stack: AsyncExitStack, clock: FakeClock
) -> None:
    # One script per flush (more events per script than a flush holds): EVALSHA calls = round trips.
    store = await stack.enter_async_context(redis_store(private_redis.url, events_per_script=100_000))
    tracker = await start_tracker(stack, store, clock=clock, flush_interval_s=0.5, sweep_interval_s=3600)
    devices = [(f"user{i}", f"sock{i}") for i in range(10_000)]
    for user, device in devices:
        await tracker.connected(user, device)
    assert await tracker.flush()  # whatever the flusher has not written yet
    await admin.config_resetstat()

    # 10,000 sockets heartbeating every 5 s: 2,000 heartbeats a second, for 2 s of real time.
    started = time.monotonic()
    sent = 0
    for tick in range(200):
        for user, device in devices[sent % len(devices) : sent % len(devices) + 20]:
            tracker.heartbeat(user, device)
            sent += 1
        clock.advance(10)
        await asyncio.sleep(started + (tick + 1) * 0.01 - time.monotonic())  # pacing the load, not waiting
    elapsed = time.monotonic() - started
    assert await tracker.flush()
    calls = await client_calls(admin)
    # 2 s at one flush per 0.5 s is about 4 round trips (+1 for the final flush and timing slack).
    assert 3 <= sum(calls.values()) == calls.get("evalsha", 0) <= elapsed / 0.5 + 2, calls
    assert sent == 4000 and tracker.stats().written == len(devices) + 4000
    # The last device's heartbeat was written: its deadline moved past the hello's.
    deadline = await admin.zscore(f"{store.prefix}deadlines", "8:user3999sock3999")
    assert deadline is not None and deadline > T0 + TIMEOUT_MS


async def test_query_of_1000_users_is_one_command(private_redis: PrivateRedis, admin: Redis) -> None:
    async with redis_store(private_redis.url) as store:
        users = [f"u{i}" for i in range(1000)]
        await store.apply([DeviceEvent(u, "d", T0) for u in users[::3]])
        await admin.config_resetstat()
        states = await store.query(users)
        sample = await store.online_among(users, 100)
        assert await client_calls(admin) == {"mget": 2}
        assert sum(p.status == ONLINE for p in states.values()) == 334 == sample.count


async def test_a_user_online_on_node_a_reads_online_on_node_b_and_offline_after_timeout_and_one_sweep(
    stack: AsyncExitStack, clock: FakeClock
) -> None:
    prefix = unique_prefix()  # one cluster: both nodes share the namespace
    store_a = CountingStore(await stack.enter_async_context(redis_store(services.REDIS_URL, prefix)))
    store_b = CountingStore(await stack.enter_async_context(redis_store(services.REDIS_URL, prefix)))
    seen_a, seen_b = Transitions(), Transitions()
    # B leads and sweeps; A, where alice is connected, does not.
    a = await start_tracker(stack, store_a, clock=clock, on_transition=seen_a, is_leader=lambda: False, sweep_interval_s=0.02)
    b = await start_tracker(stack, store_b, clock=clock, on_transition=seen_b, is_leader=lambda: True, sweep_interval_s=0.02)

    await a.connected("alice", "phone")
    assert await seen_a.wait_for("alice", ONLINE) == Transition("alice", ONLINE, T0)
    assert (await b.query(["alice", "nobody"])) == {"alice": UserPresence(ONLINE, T0), "nobody": UserPresence(OFFLINE, None)}
    assert (await b.online_among(["bob", "alice"])).users == ["alice"]

    clock.advance(5000)
    a.heartbeat("alice", "phone")
    assert await a.flush()
    clock.advance(TIMEOUT_MS)  # exactly at the deadline of the last heartbeat: still online
    sweeps = store_b.calls.get("expire", 0)
    await store_b.wait_call("expire", sweeps + 2)
    assert (await b.query(["alice"]))["alice"].status == ONLINE and seen_b.got == []

    clock.advance(1)  # the phone dropped without a close: gone one sweep after the timeout
    assert await seen_b.wait_for("alice", OFFLINE) == Transition("alice", OFFLINE, T0 + 5000)
    assert (await a.query(["alice"]))["alice"] == UserPresence(OFFLINE, T0 + 5000)
    assert store_a.calls.get("expire", 0) == 0 and seen_a.got == [Transition("alice", ONLINE, T0)]


async def test_a_clean_close_on_one_node_shows_offline_on_the_other_within_a_flush(stack: AsyncExitStack, clock: FakeClock) -> None:
    prefix = unique_prefix()
    store_a = await stack.enter_async_context(redis_store(services.REDIS_URL, prefix))
    store_b = await stack.enter_async_context(redis_store(services.REDIS_URL, prefix))
    seen_a = Transitions()
    a = await start_tracker(stack, store_a, clock=clock, on_transition=seen_a, flush_interval_s=3600)
    b = await start_tracker(stack, store_b, clock=clock, is_leader=lambda: False)
    await a.connected("bob", "laptop")
    await a.connected("bob", "phone")
    await seen_a.wait_for("bob", ONLINE)
    clock.advance(100)
    await a.disconnected("bob", "laptop")
    await a.disconnected("bob", "phone")
    # Closes are prompt even though plain heartbeats would wait an hour here.
    assert await seen_a.wait_for("bob", OFFLINE) == Transition("bob", OFFLINE, T0 + 100)
    assert (await b.query(["bob"]))["bob"] == UserPresence(OFFLINE, T0 + 100)


async def test_sweeping_moves_with_leadership(stack: AsyncExitStack, clock: FakeClock) -> None:
    prefix = unique_prefix()
    leading = {"a": True, "b": False}
    seen: dict[str, Transitions] = {"a": Transitions(), "b": Transitions()}
    nodes = {}
    for name in ("a", "b"):
        store = await stack.enter_async_context(redis_store(services.REDIS_URL, prefix))
        nodes[name] = await start_tracker(
            stack, store, clock=clock, on_transition=seen[name], is_leader=lambda n=name: leading[n], sweep_interval_s=0.02
        )
    await nodes["b"].connected("carol", "s1")
    await nodes["b"].connected("dave", "s1")
    await seen["b"].until(lambda: len(seen["b"].got) == 2)
    clock.advance(TIMEOUT_MS + 1)
    assert await seen["a"].wait_for("carol", OFFLINE) == Transition("carol", OFFLINE, T0)
    assert await seen["a"].wait_for("dave", OFFLINE) == Transition("dave", OFFLINE, T0)
    # The leader dies; the other node is elected and keeps expiring devices.
    await nodes["a"].close()
    leading.update(a=False, b=True)
    await nodes["b"].connected("erin", "s1")
    await seen["b"].wait_for("erin", ONLINE)
    clock.advance(TIMEOUT_MS + 1)
    assert (await seen["b"].wait_for("erin", OFFLINE)).last_seen == T0 + TIMEOUT_MS + 1


async def test_heartbeats_never_wait_for_a_redis_that_stopped_answering(
    private_redis: PrivateRedis, stack: AsyncExitStack, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = CountingStore(await stack.enter_async_context(redis_store(private_redis.url, socket_timeout_s=0.3, connect_timeout_s=0.3)))
    seen = Transitions()
    tracker = await start_tracker(stack, store, clock=clock, on_transition=seen, flush_interval_s=0.05, retry_max_s=0.2)
    await tracker.connected("alice", "s1")
    await seen.wait_for("alice", ONLINE)
    private_redis.pause()
    try:
        started = time.monotonic()
        for i in range(2000):
            tracker.heartbeat("alice", "s1")
            await tracker.connected(f"u{i}", "s1")
        assert time.monotonic() - started < 0.5  # recorded in memory: no caller waited on Redis
        failed = store.calls["apply"]
        await store.wait_call("apply", failed + 3)  # the flusher keeps trying, each try bounded
        with pytest.raises(PresenceUnavailable):
            await tracker.query(["alice"])
    finally:
        private_redis.resume()
    async with asyncio.timeout(10):
        while not await tracker.flush():  # each try bounded by the store's timeouts
            pass
    assert tracker.stats().pending == 0
    states = await tracker.query(["alice", "u0", "u1999"])
    assert {p.status for p in states.values()} == {ONLINE}
    # Transitions of a batch Redis ran but whose reply was lost are lost (documented); no more.
    assert len(seen.got) <= 2001 and len({t.user for t in seen.got}) == len(seen.got)
    warnings = [r for r in caplog.records if r.name == "presence.tracker" and r.levelname == "WARNING"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


async def test_a_restarted_redis_gets_the_scripts_again(private_redis: PrivateRedis, admin: Redis) -> None:
    async with redis_store(private_redis.url) as store:
        await store.apply([DeviceEvent("alice", "s1", T0)])
        await admin.script_flush()  # what a restart does to the script cache
        assert await store.apply([DeviceEvent("bob", "s1", T0)]) == [Transition("bob", ONLINE, T0)]
        assert (await store.query(["alice", "bob"])).keys() == {"alice", "bob"}
        private_redis.stop()
        with pytest.raises(PresenceUnavailable):
            await store.ping()
        private_redis.start()  # same port, empty (no persistence): scripts gone, data gone
        assert await store.apply([DeviceEvent("carol", "s1", T0)]) == [Transition("carol", ONLINE, T0)]


async def test_last_seen_outlives_the_devices_for_the_retention(stack: AsyncExitStack) -> None:
    week_ms = 7 * 24 * 3600_000
    store = await stack.enter_async_context(redis_store(services.REDIS_URL, retention_ms=week_ms))
    summary = f"{store.prefix}s:alice"
    client = Redis.from_url(services.REDIS_URL, socket_timeout=5)
    try:
        await store.apply([DeviceEvent("alice", "s1", T0)])
        assert await client.pttl(summary) == -1  # online: kept as long as a device is
        await store.apply([DeviceEvent("alice", "s1", T0 + 1, "close")])
        assert week_ms - 60_000 < await client.pttl(summary) <= week_ms
        # No device left: nothing but the summary remains.
        assert await client.exists(f"{store.prefix}d:alice", f"{store.prefix}deadlines") == 0
    finally:
        await client.aclose()


async def test_the_password_never_shows(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, "--requirepass", "s3cret-pw")
    server.start()
    try:
        url = f"redis://:wrong-pw@127.0.0.1:{server.port}/0"
        async with redis_store(url.replace("wrong-pw", "s3cret-pw")) as good:
            assert "s3cret" not in repr(good)
            await good.ping()
        bad = RedisPresenceStore(url, prefix=unique_prefix())
        try:
            with pytest.raises(PresenceUnavailable) as refused:
                await bad.apply([DeviceEvent("alice", "s1", T0)])
            assert "wrong-pw" not in str(refused.value) and "wrong-pw" not in repr(bad)
        finally:
            await bad.close()
    finally:
        server.stop()


async def test_purge_deletes_its_own_namespace_only() -> None:
    odd = "{t}[" + unique_prefix() + "]*?"  # glob characters: matched literally, not as a pattern
    neighbour = odd[:-2]  # a namespace that the odd one extends: must survive
    async with redis_store(services.REDIS_URL, neighbour) as other:
        await other.apply([DeviceEvent("alice", "s1", T0)])
        async with redis_store(services.REDIS_URL, odd) as store:
            await store.apply([DeviceEvent("alice", "s1", T0), DeviceEvent("bob", "s1", T0)])
            assert await store.purge() == 5  # two users' devices and summaries, and the deadlines
            assert (await store.query(["alice"]))["alice"].last_seen is None
        assert (await other.query(["alice"]))["alice"].status == ONLINE
