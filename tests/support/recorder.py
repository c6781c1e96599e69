"""A callback that records what it is called with; tests await conditions on it with a bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Recorder(Generic[T]):
    """Pass ``recorder`` as a callback; ``await recorder.until(cond)`` wakes on every call."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self.times: list[float] = []  # time.monotonic() of each call
        self._changed = asyncio.Event()

    def __call__(self, item: T) -> None:
        self.items.append(item)
        self.times.append(time.monotonic())
        self._changed.set()

    async def until(self, condition: Callable[[list[T]], bool], timeout: float, what: str = "a recorded event") -> T:
        """Wait until ``condition(items)`` holds (bounded); returns the newest item."""
        try:
            async with asyncio.timeout(timeout):
                while not condition(self.items):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; got {self.items!r}") from None
        return self.items[-1]
