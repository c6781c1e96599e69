"""User → node assignment: consistent hashing with bounded loads (pure; injected view and clock).

Every assignable node (not draining, capacity > 0) owns points on a 64-bit hash ring, in
proportion to its capacity. A user walks the ring from the hash of their ID and takes
the first node whose load is below its bound::

    bound(node) = ceil((1 + epsilon) * (total_load + 1) * capacity(node) / total_capacity)

and below its capacity. Load = reported connections + our own assignments the node has
not reported yet (:class:`~discovery.pending.PendingAssignments`).

- Stable: while nodes and loads stay put a user keeps their node; when a node joins or
  leaves, only about 1/N of the users move.
- Bounded: no node is handed more than (1 + epsilon) times its capacity share of the load.
- The same view gives the same answer on every node (the ring depends only on node IDs
  and capacities); pending assignments differ per answering node, which only matters
  for users whose first choice is at its bound.
- Cheap: the ring is rebuilt only when membership or capacities change; a load report
  only refreshes a number. An assignment is a hash, a bisect and O(1) work per node
  it walks past.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

from discovery.errors import AssignmentUnavailable
from discovery.pending import PendingAssignments
from discovery.registry.base import NodeInfo, RegistryView

POINTS_PER_NODE = 100  # ring points of an average-capacity node: ±10 % arc spread, 10k points for 100 nodes


def key_hash(key: str) -> int:
    """64-bit hash of a user ID or ring point (stable across processes and versions)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class Ring:
    """The hash ring of the assignable nodes of one membership (immutable)."""

    def __init__(self, nodes: Sequence[NodeInfo], points_per_node: int = POINTS_PER_NODE, cache: dict[str, list[int]] | None = None) -> None:
        """``cache``: node ID → its point hashes, kept by the caller across rebuilds, so a
        membership change hashes only new points (a rebuild is then a sort, not 10k hashes)."""
        live = sorted((n for n in nodes if not n.draining and n.capacity > 0), key=lambda n: n.node_id)
        if len(live) > 0xFFFF:
            raise ValueError("a ring holds at most 65535 nodes")
        self.nodes: tuple[NodeInfo, ...] = tuple(live)
        total = sum(n.capacity for n in live)
        # Each node's share of the total capacity: its share of the load bound.
        self.shares: tuple[float, ...] = tuple(n.capacity / total for n in live) if total else ()
        # (hash << 16) | node index: sorting plain ints is several times faster than tuples.
        points: list[int] = []
        for index, node in enumerate(live):
            count = max(1, round(points_per_node * len(live) * self.shares[index]))
            hashes = cache.setdefault(node.node_id, []) if cache is not None else []
            hashes.extend(key_hash(f"{node.node_id}#{k}") for k in range(len(hashes), count))
            points.extend((h << 16) | index for h in hashes[:count])
        points.sort()
        self._hashes = [p >> 16 for p in points]
        self._owners = [p & 0xFFFF for p in points]

    def walk(self, user_hash: int) -> Iterator[int]:
        """Indices into :attr:`nodes`, each once, in ring order from ``user_hash``."""
        hashes, owners = self._hashes, self._owners
        if not hashes:
            return
        size = len(hashes)
        start = bisect.bisect_left(hashes, user_hash)
        first = owners[start % size]
        yield first
        seen = {first}
        for step in range(1, size):
            index = owners[(start + step) % size]
            if index not in seen:
                seen.add(index)
                yield index
                if len(seen) == len(self.nodes):
                    return


def pick(ring: Ring, user: str, load_of: Callable[[int], int], total_load: int, *, epsilon: float, avoid: str | None = None) -> int | None:
    """Index of the node ``user`` goes to given each node's load, or None if every node is at its bound."""
    scale = (1.0 + epsilon) * (total_load + 1)
    nodes, shares = ring.nodes, ring.shares
    for index in ring.walk(key_hash(user)):
        node = nodes[index]
        load = load_of(index)
        if load < math.ceil(scale * shares[index]) and load < node.capacity and node.node_id != avoid:
            return index
    return None


class Assigner:
    """Assigns users from the current registry view; one per answering node (it counts its own
    pending assignments). Not thread-safe: use it from the event loop."""

    def __init__(self, *, epsilon: float = 0.25, pending_ttl_s: float = 5.0, max_stale_s: float = 10.0, points_per_node: int = POINTS_PER_NODE) -> None:
        if epsilon <= 0:
            raise ValueError("epsilon must be > 0 (0 would allow no imbalance at all)")
        self.epsilon = epsilon
        # How old a registry view may be and still be assigned from (SUSPENDED ZooKeeper).
        self.max_stale_s = max_stale_s
        self.points_per_node = points_per_node
        self.pending = PendingAssignments(pending_ttl_s)
        self._version: int | None = None
        self._membership: tuple[tuple[str, int, bool], ...] = ()
        self._ring = Ring(())
        self._points: dict[str, list[int]] = {}  # ring point hashes per node ID, reused across rebuilds
        self._infos: list[NodeInfo] = []  # the ring's nodes as in the latest view (URLs, loads)
        self._reported: list[int] = []
        self._reported_total = 0

    def assign(self, user: str, view: RegistryView, now: float, *, avoid: str | None = None) -> NodeInfo:
        """The node ``user`` should connect to (``avoid``: never this one, e.g. a draining self).

        ``now`` is monotonic seconds (the clock of ``view.stale_since``). Raises
        :class:`AssignmentUnavailable` when the view is too old, no node is assignable, or
        every node is at its bound or capacity.
        """
        if not view.usable(now, self.max_stale_s):
            raise AssignmentUnavailable(f"the registry view is {view.age(now):.1f} s old (ZooKeeper unreachable)", retry_after_ms=2000)
        if view.version != self._version:
            self._update(view)
        pending = self.pending
        pending.expire(now)
        ring = self._ring
        if not ring.nodes:
            raise AssignmentUnavailable("no chat node is accepting connections", retry_after_ms=2000)
        reported, infos = self._reported, self._infos
        total = self._reported_total + pending.total_extra
        index = pick(ring, user, lambda i: reported[i] + pending.extra(infos[i].node_id), total, epsilon=self.epsilon, avoid=avoid)
        if index is None:
            raise AssignmentUnavailable("every chat node is at its load bound or capacity", retry_after_ms=1000)
        node = infos[index]
        pending.add(node.node_id, reported[index], now)
        return node

    def _update(self, view: RegistryView) -> None:
        membership = tuple((n.node_id, n.capacity, n.draining) for n in view.nodes)
        if membership != self._membership:
            gone = {m[0] for m in self._membership} - {m[0] for m in membership}
            for node_id in gone:
                self.pending.forget(node_id)
                self._points.pop(node_id, None)
            self._ring = Ring(view.nodes, self.points_per_node, self._points)
            self._membership = membership
        by_id = {n.node_id: n for n in view.nodes}
        self._infos = [by_id[n.node_id] for n in self._ring.nodes]
        self._reported = [n.connections for n in self._infos]
        self._reported_total = sum(self._reported)
        for node in self._infos:
            self.pending.on_report(node.node_id, node.connections)
        self._version = view.version


def assign(user: str, nodes: Sequence[NodeInfo], *, epsilon: float = 0.25, pending: Mapping[str, int] | None = None) -> NodeInfo | None:
    """One assignment from a plain node list (builds a ring per call: for tests and tools;
    servers keep an :class:`Assigner`). ``pending``: extra load per node ID."""
    ring = Ring(nodes)
    extra = pending or {}
    loads = [n.connections + extra.get(n.node_id, 0) for n in ring.nodes]
    index = pick(ring, user, loads.__getitem__, sum(loads), epsilon=epsilon)
    return None if index is None else ring.nodes[index]
