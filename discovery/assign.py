"""User → node assignment: consistent hashing with bounded loads (pure).

Each node owns points on a hash ring. A user walks the ring from their own hash and
takes the first node whose load is below ``ceil((1 + epsilon) * average)``. Placement is
stable while nodes and loads stay put, and no node is handed more than its bound. Loads
include assignments made moments ago (``pending``) so a burst of connects spreads out
instead of herding onto the node that looked emptiest.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence

from discovery.registry.base import NodeInfo

POINTS_PER_NODE = 64


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def assign(user: str, nodes: Sequence[NodeInfo], *, epsilon: float = 0.25, pending: Mapping[str, int] | None = None) -> NodeInfo | None:
    """The node ``user`` should connect to, or None if no node can take them."""
    live = [n for n in nodes if not n.draining]
    if not live:
        return None
    pending = pending or {}
    loads = {n.node_id: n.connections + pending.get(n.node_id, 0) for n in live}
    bound = math.ceil((1 + epsilon) * (sum(loads.values()) + 1) / len(live))
    ring = sorted((_hash(f"{n.node_id}#{i}"), n.node_id) for n in live for i in range(POINTS_PER_NODE))
    by_id = {n.node_id: n for n in live}
    start = bisect.bisect_left(ring, (_hash(user), ""))
    seen: set[str] = set()
    for step in range(len(ring)):
        _, node_id = ring[(start + step) % len(ring)]
        if node_id in seen:
            continue
        seen.add(node_id)
        node = by_id[node_id]
        if loads[node_id] < bound and loads[node_id] < max(node.capacity, 1):
            return node
        if len(seen) == len(live):
            break
    return None
