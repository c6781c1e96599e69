"""Assignments handed out but not yet seen in their node's reported load (pure; injected ``now``).

Between a user's ``/v1/connect`` and the moment their node reports the new connection
(report interval + connect time, ~1-2 s), the registry still shows the old load. Counting
our own recent assignments on top keeps a burst of connects from piling onto whichever
node looked emptiest a moment ago.

An assignment counts toward its node until the node's reported load has caught up with
it or ``ttl_s`` passed (the user never connected). Per node we keep the reported load
when the first still-pending assignment was made (``base``) and how many are pending
(``count``); the pending surplus is ``base + count - reported``, clamped to
``0..count``. It is an estimate: users leaving meanwhile make it err towards counting
a little too much, for at most ``ttl_s``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class _Node:
    base: int  # reported load when the oldest pending assignment was made
    reported: int  # the latest reported load
    count: int = 0  # pending assignments (each also in the expiry queue)
    extra: int = 0  # how many of them the reported load does not show yet
    generation: int = 0  # bumped when the node catches up: older queue entries are void


class PendingAssignments:
    def __init__(self, ttl_s: float = 5.0) -> None:
        self.ttl_s = ttl_s
        self.total_extra = 0  # Σ extra over nodes, kept current so an assignment costs O(1)
        self._nodes: dict[str, _Node] = {}
        self._queue: deque[tuple[float, str, int]] = deque()  # (made at, node, generation), oldest first

    def add(self, node_id: str, reported: int, now: float) -> None:
        """``node_id`` (now reporting ``reported``) was just handed a user."""
        node = self._nodes.get(node_id)
        if node is None:
            node = self._nodes[node_id] = _Node(base=reported, reported=reported)
        elif node.count == 0:
            node.base = reported
        node.count += 1
        self._queue.append((now, node_id, node.generation))
        self._recount(node, reported)

    def extra(self, node_id: str) -> int:
        """Assignments to ``node_id`` its reported load does not show yet."""
        node = self._nodes.get(node_id)
        return 0 if node is None else node.extra

    def on_report(self, node_id: str, reported: int) -> None:
        """``node_id``'s reported load changed (a new registry view)."""
        node = self._nodes.get(node_id)
        if node is not None:
            self._recount(node, reported)

    def forget(self, node_id: str) -> None:
        """The node left the view: nothing counts toward it any more."""
        node = self._nodes.pop(node_id, None)
        if node is not None:
            self.total_extra -= node.extra

    def expire(self, now: float) -> None:
        """Drop assignments older than ``ttl_s`` (amortised O(1) per assignment)."""
        horizon = now - self.ttl_s
        queue = self._queue
        while queue and queue[0][0] <= horizon:
            _, node_id, generation = queue.popleft()
            node = self._nodes.get(node_id)
            if node is not None and node.generation == generation and node.count > 0:
                node.count -= 1
                self._recount(node, node.reported)

    def _recount(self, node: _Node, reported: int) -> None:
        node.reported = reported
        if node.count and reported >= node.base + node.count:
            node.count = 0  # the node's own report shows them all: caught up
            node.generation += 1
        extra = min(node.count, max(0, node.base + node.count - reported))
        self.total_extra += extra - node.extra
        node.extra = extra
