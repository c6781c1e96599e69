"""A one-waiter event without the deque: what a socket's reader, writer and replay wait on.

``asyncio.Event`` keeps a deque of waiters (~760 bytes) even while nobody waits; a node holds
two per socket. A :class:`Flag` is a bool and, only while someone waits, one future.
"""

from __future__ import annotations

import asyncio


class Flag:
    """Set / clear / wait, like ``asyncio.Event``, for one waiter at a time."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        """Return once set (at once if it is)."""
        if self._set:
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
        await waiter
