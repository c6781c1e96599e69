"""Static registry: the embedded single node is the whole cluster."""

from __future__ import annotations

from dataclasses import replace

from discovery.registry.base import NodeInfo


class StaticRegistry:
    def __init__(self) -> None:
        self._me: NodeInfo | None = None

    async def start(self, me: NodeInfo) -> None:
        self._me = me

    async def close(self) -> None:
        self._me = None

    async def report(self, connections: int, *, draining: bool = False) -> None:
        if self._me is not None:
            self._me = replace(self._me, connections=connections, draining=draining)

    async def nodes(self) -> list[NodeInfo]:
        return [self._me] if self._me is not None else []
