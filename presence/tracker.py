"""Presence as the chat gateway sees it: devices come, heartbeat and go.

The tracker owns the clock and the store; the gateway calls it and never touches
the store directly, so swapping in heartbeat-timeout presence changes nothing above.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from presence.store.base import PresenceStore, UserPresence


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class PresenceTracker:
    def __init__(self, store: PresenceStore, *, clock: Callable[[], int] = _now_ms) -> None:
        self.store = store
        self._clock = clock

    async def connected(self, user: str, device: str) -> bool:
        return await self.store.connect(user, device, self._clock())

    async def heartbeat(self, user: str, device: str) -> None:
        await self.store.heartbeat(user, device, self._clock())

    async def disconnected(self, user: str, device: str) -> bool:
        return await self.store.disconnect(user, device, self._clock())

    async def query(self, users: list[str]) -> dict[str, UserPresence]:
        return await self.store.query(users)
