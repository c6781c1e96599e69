"""Per-key asyncio locks that do not outlive their use."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable


class KeyedLocks:
    """One :class:`asyncio.Lock` per key, dropped when nobody holds or waits for it, so a
    store that locks per channel holds memory only for the channels being written now."""

    def __init__(self) -> None:
        # key → (its lock, [holders and waiters]): the count says when the entry can go.
        self._locks: dict[Hashable, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        """Hold ``key``'s lock for the ``async with`` block."""
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]

    def __len__(self) -> int:
        """How many keys are held or waited for now."""
        return len(self._locks)
