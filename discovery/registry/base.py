"""The Registry port: which chat nodes are live, where clients reach them, how loaded they are.

Contract (both adapters):
- :meth:`Registry.start` registers this node (it becomes assignable) and returns once
  this node's own view holds the cluster as it is now; :meth:`Registry.close`
  deregisters it at once (other nodes stop assigning to it).
- :meth:`Registry.report` publishes the live connection count at most once per report
  interval (bursts are coalesced: the latest value wins); a change of ``draining`` is
  written at once and visible to this node's own view when ``report`` returns.
- :meth:`Registry.view` answers from a local, watched copy: no round trip, O(1) when
  nothing changed. :attr:`RegistryView.stale_since` says since when the copy may be out
  of date (the registry's backend is unreachable); callers stop handing out assignments
  from a view older than their bound (:meth:`RegistryView.usable`).
- After the backend lost this node's registration (ZooKeeper: session expired), the
  adapter registers again by itself, with the latest reported load and draining flag.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    url: str  # the WebSocket URL clients connect to (…/v1/ws)
    capacity: int  # connections this node is sized for; it is never assigned more
    connections: int = 0  # live connections, as last reported
    draining: bool = False  # shutting down: never assign new users here
    started_at_ms: int = 0  # Unix ms when the node started (operators, dashboards)
    version: str = ""  # the node's software version (operators: a rollout in progress shows two)


@dataclass(frozen=True, slots=True)
class RegistryView:
    """An immutable snapshot of the cluster as this node sees it."""

    nodes: tuple[NodeInfo, ...]  # sorted by node_id: the same view gives the same answers everywhere
    version: int  # changes whenever anything in the view changes (a cheap cache key)
    stale_since: float | None = None  # monotonic; None while the copy is kept live by the backend

    def age(self, now: float) -> float:
        """Seconds the view may have been out of date at monotonic ``now`` (0 while live)."""
        return 0.0 if self.stale_since is None else max(0.0, now - self.stale_since)

    def usable(self, now: float, max_stale_s: float) -> bool:
        """May assignments still be handed out from this view at ``now``?"""
        return self.age(now) <= max_stale_s


class Registry(Protocol):
    async def start(self, me: NodeInfo) -> None:
        """Register this node and build the local view (bounded)."""

    async def close(self) -> None:
        """Deregister at once and stop watching (idempotent)."""

    async def report(self, connections: int, *, draining: bool | None = None) -> None:
        """Publish this node's load (rate-limited) and, if given, its draining flag (at once)."""

    def view(self) -> RegistryView:
        """The cluster as last seen, with its freshness; never waits."""

    async def nodes(self) -> list[NodeInfo]:
        """``list(view().nodes)``: kept for callers written before :meth:`view`."""

    def subscribe(self, callback: Callable[[RegistryView], None]) -> Callable[[], None]:
        """Call ``callback`` on the loop after each view change; returns an unsubscribe function."""
