"""The Relay contract (chat/relay/base.py), run against every adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.support.sink import Sink


@pytest.fixture
async def relay(relay_factory: Callable[[], Any]) -> AsyncIterator[tuple[Any, Sink]]:
    r = relay_factory()
    sink = Sink()
    await r.start(sink.deliver, sink.on_gap)
    yield r, sink
    await r.close()


async def test_delivers_to_subscribed_topics_only(relay: tuple[Any, Sink]) -> None:
    r, sink = relay
    await r.subscribe("c:1")
    await r.publish("c:2", b"not for us")
    await r.publish("c:1", b"hello")
    got = await sink.wait_for(1)
    # Anything for c:2 would have been delivered before c:1's (same connection, same order).
    assert got == [("c:1", b"hello")]


async def test_order_per_topic_is_publish_order(relay: tuple[Any, Sink]) -> None:
    r, sink = relay
    await r.subscribe("c:10")
    await r.subscribe("c:11")
    for i in range(500):
        await r.publish("c:10" if i % 2 else "c:11", b"%d" % i)
    got = await sink.wait_for(500)
    for topic in ("c:10", "c:11"):
        seq = [int(p) for t, p in got if t == topic]
        assert seq == sorted(seq) and len(seq) == 250


async def test_hand_off_order_holds_without_awaiting_each_confirmation(relay: tuple[Any, Sink]) -> None:
    r, sink = relay
    await r.subscribe("c:12")
    confirmations = [r.hand_off("c:12", b"%d" % i) for i in range(1000)]  # no await in between
    for confirmation in confirmations:
        await confirmation
    got = await sink.wait_for(1000)
    assert [int(p) for _, p in got] == list(range(1000))


async def test_payload_bytes_are_opaque(relay: tuple[Any, Sink]) -> None:
    r, sink = relay
    await r.subscribe("u:alice")
    payload = bytes(range(256)) * 4000  # ~1 MiB, every byte value
    await r.publish("u:alice", payload)
    assert (await sink.wait_for(1))[0] == ("u:alice", payload)


async def test_unsubscribe_stops_delivery(relay: tuple[Any, Sink]) -> None:
    r, sink = relay
    await r.subscribe("c:5")
    await r.subscribe("c:6")
    await r.unsubscribe("c:5")
    await r.publish("c:5", b"gone")
    await r.publish("c:6", b"marker")
    assert await sink.wait_for(1) == [("c:6", b"marker")]


async def test_ping_answers_while_running(relay: tuple[Any, Sink]) -> None:
    r, _ = relay
    await r.ping()


async def test_single_node_says_whether_another_process_can_publish(relay: tuple[Any, Sink], relay_factory: Callable[[], Any]) -> None:
    """``single_node`` is a property of the adapter: True only if a second instance (another
    node) can never reach this one's subscribers. The subscribe seam relies on it."""
    r, sink = relay
    other = relay_factory()
    other_sink = Sink()
    await other.start(other_sink.deliver, other_sink.on_gap)
    try:
        await r.subscribe("c:20")
        await other.publish("c:20", b"from another node")
        await r.publish("c:20", b"marker")
        got = [p for _, p in await sink.wait_for(1 if r.single_node else 2)]
        assert got == ([b"marker"] if r.single_node else [b"from another node", b"marker"])
    finally:
        await other.close()


async def test_a_confirmed_hand_off_arrives_before_anything_handed_off_later(
    relay: tuple[Any, Sink], relay_factory: Callable[[], Any]
) -> None:
    """What the ack rule needs: once a hand-off is confirmed, a later one — from this node or
    (where there can be one) another — is delivered after it."""
    r, sink = relay
    other = relay_factory() if not r.single_node else r
    if other is not r:
        await other.start(Sink().deliver, Sink().on_gap)
    try:
        await r.subscribe("c:21")
        for i in range(50):
            await r.hand_off("c:21", b"a%d" % i)
            await other.hand_off("c:21", b"b%d" % i)
        got = [p for _, p in await sink.wait_for(100)]
        assert got == [p for i in range(50) for p in (b"a%d" % i, b"b%d" % i)]
    finally:
        if other is not r:
            await other.close()
