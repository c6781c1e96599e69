from __future__ import annotations

from collections import Counter

import pytest

from chat import events
from chat.ratelimit import KeyedLimiter, TokenBucket
from discovery.assign import assign
from discovery.registry.base import NodeInfo


def test_token_bucket_burst_then_rate() -> None:
    b = TokenBucket(rate=10, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = b.take(0.0)
    assert wait == pytest.approx(0.1)
    assert b.take(0.1) == 0.0
    assert b.take(100.0) == 0.0  # refills, but never above the burst
    assert [b.take(100.0) for _ in range(3)][-1] > 0


def test_keyed_limiter_is_per_key_and_bounded() -> None:
    lim = KeyedLimiter(rate=1, burst=1, max_keys=2)
    assert lim.take("a", 0) == 0 and lim.take("a", 0) > 0
    assert lim.take("b", 0) == 0
    lim.take("c", 0)  # evicts the least recently used key ("a")
    assert lim.take("a", 0) == 0


def test_envelope_round_trip() -> None:
    frame = '{"op":"message","text":"line\\nbreak é"}'.encode()
    env = events.unpack(events.pack(events.MESSAGE, 12, 345, "sess1", frame))
    assert env == events.Envelope("m", 12, 345, "sess1", frame)
    with pytest.raises(ValueError):
        events.unpack(b"no header")


def nodes(n: int, load: int = 0, capacity: int = 1000) -> list[NodeInfo]:
    return [NodeInfo(f"n{i}", f"ws://n{i}/v1/ws", capacity, load) for i in range(n)]


def test_assignment_is_stable_and_skips_draining() -> None:
    ring = nodes(3)
    first = {u: assign(f"user{u}", ring).node_id for u in range(200)}  # type: ignore[union-attr]
    assert first == {u: assign(f"user{u}", ring).node_id for u in range(200)}  # type: ignore[union-attr]
    drained = [ring[0].__class__(**{**ring[0].__dict__, "draining": True}) if False else NodeInfo("n0", "x", 1000, 0, True), *ring[1:]]
    assert all(assign(f"user{u}", drained).node_id != "n0" for u in range(200))  # type: ignore[union-attr]
    assert assign("u", []) is None


def test_bounded_loads_spread_a_burst() -> None:
    ring = nodes(4)
    pending: Counter[str] = Counter()
    for u in range(400):
        node = assign(f"burst{u}", ring, epsilon=0.1, pending=pending)
        assert node is not None
        pending[node.node_id] += 1
    assert max(pending.values()) <= 1.1 * 100 + 1


def test_full_nodes_are_not_assigned() -> None:
    assert assign("u", nodes(2, load=10, capacity=10)) is None
