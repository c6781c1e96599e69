"""What operators are shown: the cluster's nodes, this node's health, its counters, the dynamic
settings — one read model shared by the ops API (chat/ops_api.py) and the dashboard's live
stream (chat/ops_events.py).

Everything here answers from memory (the registry's watched view, the config snapshot, plain
counters) except this node's readiness, which pings its backends: that is bounded by
:data:`READINESS_TIMEOUT_S`, and a dashboard snapshot is built at most once per
:data:`SNAPSHOT_TTL_S` however many dashboards are open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chat.metrics.counters import MessageCounters, WireCounters
from chat.metrics.looplag import LoopLag
from chat.node import Node
from chat.ops_rooms import RoomFacts, RoomProtection, room_wire
from discovery.config.base import ConfigStore
from discovery.config.schema import Setting
from discovery.registry.base import NodeInfo, RegistryView

#: This node's readiness checks must answer within this, or they count as failing.
READINESS_TIMEOUT_S = 2.0
#: A dashboard snapshot is reused for this long (every open dashboard polls once a second).
SNAPSHOT_TTL_S = 0.9


@dataclass(frozen=True, slots=True, kw_only=True)
class OpsSources:
    """Where the read model comes from (all built by the composition root)."""

    node_id: str
    node: Node
    view: Callable[[], RegistryView]
    config: ConfigStore
    wire: WireCounters
    messages: MessageCounters
    lag: LoopLag
    rooms: RoomProtection  # hot-room protection
    facts: RoomFacts | None = None  # the rooms' member and online counts (None: not shown)


class OpsView:
    """Builds the ops API's answers and the dashboard's snapshots."""

    def __init__(self, sources: OpsSources) -> None:
        self._s = sources
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._building: asyncio.Future[dict[str, Any]] | None = None

    async def readiness(self) -> dict[str, str]:
        """What on this node cannot serve now (empty: ready), bounded in time."""
        try:
            async with asyncio.timeout(READINESS_TIMEOUT_S):
                return await self._s.node.readiness()
        except TimeoutError:
            return {"readiness": f"the checks did not answer within {READINESS_TIMEOUT_S:g} s"}

    async def nodes(self) -> dict[str, Any]:
        """``GET /v1/ops/nodes``: every node of the registry view, and this node's readiness."""
        view = self._s.view()
        failing = await self.readiness()
        return {
            "nodes": [node_wire(n, this=n.node_id == self._s.node_id) for n in view.nodes],
            "this_node": {"node_id": self._s.node_id, "ready": not failing, "failing": failing},
            "view_age_s": round(view.age(time.monotonic()), 1),
        }

    def hot_rooms(self) -> list[dict[str, Any]]:
        """Every room hot-room protection watches, hottest first."""
        rooms, facts = self._s.rooms, self._s.facts
        views = rooms.snapshot()
        if facts is not None:
            facts.want([v.channel for v in views])
        return [room_wire(v, None if facts is None else facts.get(v.channel)) for v in views]

    def breakers(self) -> list[dict[str, Any]]:
        """Each guarded backend's circuit breaker, and the requests it refused since start (an
        embedded node has none: its store and relay are in process)."""
        rooms = self._s.rooms
        refused = rooms.refusals()
        return [{"name": name, "state": state, "refused": refused.get(name, 0)} for name, state in sorted(rooms.health().items())]

    async def pin(self, room: int, hot: bool | None) -> None:
        """Pin protection of ``room`` on every node (ValueError past the detector's pin limit)."""
        await self._s.rooms.pin(room, hot)

    def config(self) -> dict[str, Any]:
        """``GET /v1/ops/config``: every dynamic setting's value, and its declaration."""
        store = self._s.config
        return {"config": dict(store.snapshot().values), "settings": [setting_wire(s) for s in store.schema.settings]}

    def stats(self) -> dict[str, Any]:
        """Totals since start (the dashboard turns them into rates) and a few gauges."""
        s = self._s
        return {
            "connections": len(s.node.sessions),
            "draining": s.node.draining,
            "messages_stored": s.messages.stored,
            "deliveries": s.wire.deliveries,
            "resyncs": s.wire.resyncs,
            "errors": dict(s.wire.errors),
            "loop_lag_ms": round(s.lag.last_s * 1000, 1),
        }

    async def snapshot(self) -> dict[str, Any]:
        """The dashboard's view of now: shared by every open dashboard for :data:`SNAPSHOT_TTL_S`."""
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < SNAPSHOT_TTL_S:
            return self._cached[1]
        if self._building is None or self._building.done():
            self._building = asyncio.ensure_future(self._build())
        return await asyncio.shield(self._building)

    async def _build(self) -> dict[str, Any]:
        body = {
            "time": time.time_ns() // 1_000_000,
            "node_id": self._s.node_id,
            "cluster": await self.nodes(),
            "stats": self.stats(),
            "config": dict(self._s.config.snapshot().values),
            "rooms": self.hot_rooms(),
            "breakers": self.breakers(),
        }
        self._cached = (time.monotonic(), body)
        return body


def node_wire(node: NodeInfo, *, this: bool) -> dict[str, Any]:
    """One node as the ops API shows it (times in ms since the Unix epoch)."""
    return {
        "node_id": node.node_id,
        "url": node.url,
        "connections": node.connections,
        "capacity": node.capacity,
        "draining": node.draining,
        "started_at": node.started_at_ms,
        "version": node.version,
        "this": this,
    }


def setting_wire(setting: Setting) -> dict[str, Any]:
    """A dynamic setting's declaration, for a form: type, bounds, default and what it does."""
    return {
        "key": setting.key,
        "type": setting.kind.__name__,
        "default": setting.default,
        "minimum": setting.minimum,
        "maximum": setting.maximum,
        "choices": list(setting.choices) if setting.choices is not None else None,
        "doc": setting.doc,
    }
