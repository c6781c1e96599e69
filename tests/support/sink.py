"""A relay handler for tests: collects deliveries and gaps, awaited with a bound (never a sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable


class Sink:
    """Collects a relay's deliveries and gaps; tests await counts with a bound, never sleep."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.gaps: list[str] = []
        self._changed = asyncio.Event()

    def deliver(self, topic: str, payload: bytes) -> None:
        self.got.append((topic, payload))
        self._changed.set()

    def on_gap(self, topics: Iterable[str]) -> None:
        self.gaps.extend(topics)
        self._changed.set()

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        await self.until(lambda: len(self.got) >= count, timeout)
        return self.got

    def payloads(self, topic: str) -> list[bytes]:
        return [p for t, p in self.got if t == topic]
