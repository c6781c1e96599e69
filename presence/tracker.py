"""Presence as the chat gateway sees it: devices come, heartbeat and go.

The tracker owns the clock and the store; the gateway calls it and never touches the store
directly. Heartbeats are recorded synchronously (a socket answers one without awaiting) and
written to the store in batches, at most every ``flush_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from presence.store.base import PresenceStore, UserPresence

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class PresenceTracker:
    def __init__(self, store: PresenceStore, *, clock: Callable[[], int] = _now_ms, flush_s: float = 0.5) -> None:
        self.store = store
        self._clock = clock
        self._flush_s = flush_s
        # (user, device) → time of its latest heartbeat not yet written.
        self._beats: dict[tuple[str, str], int] = {}
        self._flushing: asyncio.Task[None] | None = None

    async def connected(self, user: str, device: str) -> bool:
        return await self.store.connect(user, device, self._clock())

    def heartbeat(self, user: str, device: str) -> None:
        """A device is alive: recorded now, written with the next batch."""
        self._beats[(user, device)] = self._clock()
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush_soon())

    async def disconnected(self, user: str, device: str) -> bool:
        self._beats.pop((user, device), None)
        return await self.store.disconnect(user, device, self._clock())

    async def query(self, users: list[str]) -> dict[str, UserPresence]:
        return await self.store.query(users)

    async def close(self) -> None:
        task, self._flushing = self._flushing, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._flush_s)
        beats, self._beats = self._beats, {}
        for (user, device), now_ms in beats.items():
            try:
                await self.store.heartbeat(user, device, now_ms)
            except Exception:
                log.warning("presence: could not record heartbeats", exc_info=True)
                return
