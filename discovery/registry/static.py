"""Static registry: the embedded single node is the whole cluster.

There is no backend to rate-limit or to lose, so reports apply at once and the view is
always live.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from discovery.listeners import Listeners
from discovery.registry.base import NodeInfo, RegistryView


class StaticRegistry:
    def __init__(self) -> None:
        self._me: NodeInfo | None = None
        self._view = RegistryView((), 0)
        self._listeners: Listeners[RegistryView] = Listeners("registry")

    async def start(self, me: NodeInfo) -> None:
        self._set(me)

    async def close(self) -> None:
        self._set(None)

    async def report(self, connections: int, *, draining: bool | None = None) -> None:
        me = self._me
        if me is None:
            return
        updated = replace(me, connections=connections, draining=me.draining if draining is None else draining)
        if updated != me:
            self._set(updated)

    def view(self) -> RegistryView:
        return self._view

    async def nodes(self) -> list[NodeInfo]:
        return list(self._view.nodes)

    def subscribe(self, callback: Callable[[RegistryView], None]) -> Callable[[], None]:
        return self._listeners.add(callback)

    def _set(self, me: NodeInfo | None) -> None:
        self._me = me
        self._view = RegistryView((me,) if me is not None else (), self._view.version + 1)
        self._listeners.notify(self._view)
