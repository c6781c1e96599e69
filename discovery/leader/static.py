"""Static election (embedded mode): the single node is always the leader once started."""

from __future__ import annotations

from collections.abc import Callable


class StaticElection:
    def __init__(self) -> None:
        self._leader = False
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def is_leader(self) -> bool:
        return self._leader

    async def start(self) -> None:
        self._set(True)

    async def close(self) -> None:
        self._set(False)

    def subscribe(self, callback: Callable[[bool], None]) -> Callable[[], None]:
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _set(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            for callback in list(self._listeners):
                callback(leader)
