"""Consistent hashing with bounded loads: the ring, the bound, the Assigner over registry views."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from discovery.assign import Assigner, Ring, assign, pick
from discovery.errors import AssignmentUnavailable
from discovery.registry.base import NodeInfo, RegistryView


def nodes(n: int, *, capacity: int = 100_000, load: int = 0) -> tuple[NodeInfo, ...]:
    return tuple(NodeInfo(f"n{i:02d}", f"ws://n{i}/v1/ws", capacity, load) for i in range(n))


def test_the_ring_walks_every_node_once_in_a_fixed_order() -> None:
    ring = Ring(nodes(7))
    order = list(ring.walk(12345))
    assert sorted(order) == list(range(7))
    assert order == list(Ring(tuple(reversed(nodes(7)))).walk(12345))  # input order does not matter
    assert list(Ring(()).walk(1)) == []


def test_the_ring_leaves_out_draining_and_zero_capacity_nodes() -> None:
    ring = Ring((*nodes(2), NodeInfo("d", "x", 100, draining=True), NodeInfo("z", "x", 0)))
    assert [n.node_id for n in ring.nodes] == ["n00", "n01"]


def test_bigger_nodes_get_proportionally_more_users() -> None:
    big = NodeInfo("big", "x", 300_000)
    view = RegistryView((big, *nodes(3)), 1)
    assigner = Assigner()
    counts = Counter(assigner.assign(f"u{i}", view, now=0.0).node_id for i in range(12_000))
    assert 0.4 <= counts["big"] / 12_000 <= 0.6  # half the capacity, half the users (±)
    assert max(counts.values()) <= 1.25 * 12_000 * 0.5 + 1


def test_pick_respects_the_bound_capacity_and_avoid() -> None:
    ring = Ring(nodes(2, capacity=10))
    loads = [0, 0]
    first = pick(ring, "u", loads.__getitem__, 0, epsilon=0.25)
    assert first is not None
    loads[first] = 10  # at capacity
    assert pick(ring, "u", loads.__getitem__, 10, epsilon=0.25) == 1 - first
    assert pick(ring, "u", loads.__getitem__, 10, epsilon=0.25, avoid=ring.nodes[1 - first].node_id) is None


def test_every_answering_node_gives_a_user_the_same_node() -> None:
    view = RegistryView(nodes(10, load=500), 3)
    a, b = Assigner(), Assigner()
    assert all(a.assign(f"u{i}", view, 0.0) == b.assign(f"u{i}", view, 0.0) for i in range(500))


def test_a_burst_from_one_answering_node_spreads_within_the_bound_on_stale_loads() -> None:
    view = RegistryView(nodes(10, load=0), 1)  # reports never arrive during the burst
    assigner = Assigner(epsilon=0.25)
    counts = Counter(assigner.assign(f"u{i}", view, now=i / 1000).node_id for i in range(1000))
    assert max(counts.values()) <= 1.25 * 100 + 1


def test_one_node_joining_moves_about_one_nth_of_the_users() -> None:
    before = RegistryView(nodes(20, load=250), 1)
    after = RegistryView((*nodes(20, load=250), NodeInfo("new", "ws://new", 100_000, 0)), 2)
    a, b = Assigner(), Assigner()
    users = [f"u{i}" for i in range(5000)]
    moved = sum(1 for u in users if a.assign(u, before, 0.0).node_id != b.assign(u, after, 0.0).node_id)
    assert moved / len(users) <= 2 / 21


def test_draining_full_and_stale_views_are_refused_with_a_retry_hint() -> None:
    assigner = Assigner(max_stale_s=5)
    with pytest.raises(AssignmentUnavailable) as no_nodes:
        assigner.assign("u", RegistryView((), 1), 0.0)
    assert no_nodes.value.retry_after_ms
    draining = RegistryView((replace(nodes(1)[0], draining=True),), 2)
    with pytest.raises(AssignmentUnavailable):
        assigner.assign("u", draining, 0.0)
    with pytest.raises(AssignmentUnavailable, match="every chat node"):
        assigner.assign("u", RegistryView(nodes(2, capacity=5, load=5), 3), 0.0)
    stale = RegistryView(nodes(2), 4, stale_since=100.0)
    assert assigner.assign("u", stale, now=105.0).node_id.startswith("n")
    with pytest.raises(AssignmentUnavailable, match="s old"):
        assigner.assign("u", stale, now=105.1)


def test_load_reports_do_not_rebuild_the_ring_and_fresh_urls_are_returned() -> None:
    assigner = Assigner()
    first = nodes(3)
    assigner.assign("u", RegistryView(first, 1), 0.0)
    ring = assigner._ring
    moved_url = tuple(replace(n, connections=7, url=n.url + "?v2") for n in first)
    got = assigner.assign("u", RegistryView(moved_url, 2), 0.0)
    assert assigner._ring is ring
    assert got.url.endswith("?v2") and got.connections == 7
    assigner.assign("u", RegistryView(moved_url[:2], 3), 0.0)
    assert assigner._ring is not ring


def test_the_plain_function_keeps_working_for_tools() -> None:
    assert assign("u", []) is None
    got = assign("u", nodes(3), pending={"n00": 5})
    assert got is not None and got.node_id in {"n00", "n01", "n02"}
