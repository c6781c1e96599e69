"""The store's circuit breaker against a real Cassandra that freezes behind a TCP proxy (the shared
Cassandra itself is left alone): CRITICAL within seconds, sends refused fast with `unavailable`,
HEALTHY again after the thaw, and every acked message stored."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from chat import commands, dynamic
from chat.access import Access
from chat.channels import ChannelService
from chat.errors import ChatError
from chat.hub import Hub
from chat.minter import FixedWorker, IdMinter
from chat.models import Principal
from chat.protect.guard import Protection
from chat.relay.local import LocalRelay
from chat.service import MessageLimits, MessageService
from chat.store.cassandra import CassandraMessageStore
from chat.waiting.memory import MemoryWaitingRooms
from discovery.config.memory import InProcessConfigStore
from tests.integration.conftest import cassandra_settings
from tests.support import services

pytestmark = [pytest.mark.cassandra, pytest.mark.timeout(120)]

BREAKER = {
    "cassandra_breaker_min_requests": 5,
    "cassandra_breaker_slow_s": 0.5,
    "cassandra_breaker_open_s": 1.0,
    "cassandra_breaker_max_open_s": 2.0,
    "cassandra_breaker_probes": 2,
}


async def until(condition: Any, timeout: float, what: str) -> float:
    """Poll ``condition`` (bounded): the breaker has no event to await from outside. Returns the wait."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"no {what} within {timeout}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_a_frozen_cassandra_is_shielded_within_seconds_and_nothing_acked_is_lost(tcp_proxy: Any) -> None:
    host, _, port = services.CASSANDRA_HOSTS.partition(":")
    proxy = await tcp_proxy((host, int(port or 9042)))
    settings = cassandra_settings(CHAT_CASSANDRA_HOSTS=f"127.0.0.1:{proxy.port}", CHAT_CASSANDRA_TIMEOUT_S="1.0")
    raw = CassandraMessageStore.from_settings(settings)
    await raw.open()
    config = InProcessConfigStore(dynamic.SCHEMA)
    await config.start()
    await config.set(BREAKER)
    relay = LocalRelay()
    protection = Protection(node_id="n", store=raw, relay=relay, lines=MemoryWaitingRooms(), guard_store=True, guard_relay=False, wait_s=3.0)
    hub = Hub(relay, policy=protection.fanout)
    await hub.start()
    await protection.start(hub, config)
    store, minter = protection.store, IdMinter(FixedWorker(77))
    access = Access(store)
    service = MessageService(store=store, relay=relay, minter=minter, access=access, limits=MessageLimits(store_timeout_s=3.0), guard=protection)
    channels = ChannelService(store=store, relay=relay, minter=minter, access=access, group_max_members=100)
    alice = Principal("alice")
    channel = (await channels.create(alice, commands.CreateChannel("group", "breaker", ()))).channel.id
    acked: list[int] = []
    refusals: list[tuple[str, float, float, int | None]] = []  # (code, when it started, seconds it took, retry_after_ms)
    stop = asyncio.Event()

    async def sender(k: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            started = time.monotonic()
            try:
                message, _ = await service.send(alice, commands.Send(None, channel, f"{k}-{i}", f"{k}-{i}"))
                acked.append(message.id)
            except ChatError as error:
                refusals.append((error.code, started, time.monotonic() - started, error.retry_after_ms))
                await asyncio.sleep(0.02)  # a client backing off a little

    senders = [asyncio.create_task(sender(k)) for k in range(8)]
    try:
        await until(lambda: len(acked) >= 40, 20, "traffic")
        assert protection.health() == {"cassandra": "healthy"}
        proxy.freeze()
        took = await until(lambda: protection.health()["cassandra"] == "critical", 10, "CRITICAL")
        assert took < 3.0, f"CRITICAL only after {took:.1f}s"
        shielded_at = time.monotonic()
        await asyncio.sleep(0.5)  # sends go on meanwhile: every one started now is refused at once
        fast = [r for r in refusals if r[1] >= shielded_at]
        assert fast and all(code == "unavailable" and took < 0.1 and (retry or 0) >= 1 for code, _, took, retry in fast), fast[:5]
        assert protection.counters.sends_shielded >= len(fast)
        proxy.thaw()
        await until(lambda: protection.health()["cassandra"] == "healthy", 20, "recovery to HEALTHY")
        count = len(acked)
        await until(lambda: len(acked) >= count + 20, 10, "acks after recovery")
    finally:
        stop.set()
        await asyncio.gather(*senders, return_exceptions=True)
        await protection.close()
        await service.close()
        await raw.close()
    # Nothing acked is lost: read back behind no proxy.
    direct = CassandraMessageStore.from_settings(cassandra_settings())
    await direct.open()
    try:
        stored: list[int] = []
        after = 0
        while True:
            page = await direct.history(channel, after=after, limit=200)
            stored += [m.id for m in page.messages]
            if not page.has_more:
                break
            after = stored[-1]
    finally:
        await direct.close()
    assert set(acked) <= set(stored) and len(stored) == len(set(stored))
