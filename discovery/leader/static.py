"""Static election (embedded mode): the single node is always the leader once started."""

from __future__ import annotations

from collections.abc import Callable

from discovery.listeners import Listeners


class StaticElection:
    def __init__(self) -> None:
        self._leader = False
        self._listeners: Listeners[bool] = Listeners("election")

    @property
    def is_leader(self) -> bool:
        return self._leader

    async def start(self) -> None:
        self._set(True)

    async def close(self) -> None:
        self._set(False)

    def subscribe(self, callback: Callable[[bool], None]) -> Callable[[], None]:
        return self._listeners.add(callback)

    def _set(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            self._listeners.notify(leader)
