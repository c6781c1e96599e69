"""Presence test helpers: an injected clock, a transition log awaited with a bound, Redis stores
with a key prefix of their own (deleted afterwards), and a store wrapper that counts and fails."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from presence.state import DeviceEvent, Expiry, OnlineSample, Transition, UserPresence
from presence.store.base import PresenceStore, PresenceUnavailable

T0 = 1_732_280_000_000


class FakeClock:
    """Milliseconds since the Unix epoch, moved by the test."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


class Transitions:
    """An ``on_transition`` handler that collects; tests await a condition, bounded, never sleep."""

    def __init__(self) -> None:
        self.got: list[Transition] = []
        self._changed = asyncio.Event()

    def __call__(self, transition: Transition) -> None:
        self.got.append(transition)
        self._changed.set()

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def wait_for(self, user: str, status: str, timeout: float = 5.0) -> Transition:
        def found() -> bool:
            return any(t.user == user and t.status == status for t in self.got)

        await self.until(found, timeout)
        return next(t for t in self.got if t.user == user and t.status == status)


class CountingStore:
    """Wraps a store: counts calls per method, can be made to fail, and signals each call."""

    def __init__(self, inner: PresenceStore) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}
        self.batches: list[list[DeviceEvent]] = []
        # Methods that raise PresenceUnavailable (after being counted), e.g. {"apply"}.
        self.failing: set[str] = set()
        self.called = asyncio.Event()

    @property
    def timeout_ms(self) -> int:
        return self.inner.timeout_ms

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        self.called.set()
        if name in self.failing:
            raise PresenceUnavailable("failing on purpose")

    async def wait_call(self, name: str, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.calls.get(name, 0) < count:
                self.called.clear()
                await self.called.wait()

    async def apply(self, events: Sequence[DeviceEvent]) -> list[Transition]:
        self.batches.append(list(events))
        self._count("apply")
        return await self.inner.apply(events)

    async def expire(self, now_ms: int, limit: int) -> Expiry:
        self._count("expire")
        return await self.inner.expire(now_ms, limit)

    async def query(self, users: Sequence[str]) -> dict[str, UserPresence]:
        self._count("query")
        return await self.inner.query(users)

    async def online_among(self, users: Sequence[str], limit: int) -> OnlineSample:
        self._count("online_among")
        return await self.inner.online_among(users, limit)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


def unique_prefix() -> str:
    return f"test-presence-{uuid.uuid4().hex[:10]}:"


@contextlib.asynccontextmanager
async def redis_store(url: str, prefix: str | None = None, **kwargs: Any) -> AsyncIterator[Any]:
    """A RedisPresenceStore on a prefix of its own; its keys are deleted afterwards."""
    from presence.store.redis import RedisPresenceStore

    prefix = prefix or unique_prefix()
    store = RedisPresenceStore(url, prefix=prefix, name="test-presence", **kwargs)
    try:
        yield store
    finally:
        try:
            await store.purge()
        finally:
            await store.close()
