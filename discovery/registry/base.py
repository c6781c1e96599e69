"""The Registry port: which chat nodes are live, where clients reach them, how loaded they are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    url: str  # the WebSocket URL clients connect to (…/v1/ws)
    capacity: int  # connections this node is sized for
    connections: int = 0  # live connections, as last reported
    draining: bool = False  # shutting down: never assign new users here


class Registry(Protocol):
    async def start(self, me: NodeInfo) -> None:
        """Register this node (it becomes assignable)."""

    async def close(self) -> None:
        ...

    async def report(self, connections: int, *, draining: bool = False) -> None:
        """Publish this node's current load (and whether it is draining)."""

    async def nodes(self) -> list[NodeInfo]:
        """Live nodes as last seen; raises :class:`chat.errors.Unavailable` if the registry cannot be seen."""
