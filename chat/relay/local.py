"""In-process relay: the embedded single node's pub/sub."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from chat.errors import Unavailable
from chat.relay.base import DeliverFn, GapFn


class LocalRelay:
    """Delivers synchronously inside ``publish``: order per topic is publish order, and
    there is no queue to bound because nothing is buffered."""

    node_local = True

    def __init__(self) -> None:
        self._deliver: DeliverFn | None = None
        # Topics with local interest; publishing elsewhere is a no-op, as on a real broker.
        self._topics: set[str] = set()

    async def start(self, deliver: DeliverFn, on_gap: GapFn) -> None:
        self._deliver = deliver

    async def close(self) -> None:
        self._deliver = None
        self._topics.clear()

    async def ping(self) -> None:
        if self._deliver is None:
            raise Unavailable("relay is not running")

    async def subscribe(self, topic: str) -> None:
        self._topics.add(topic)

    async def unsubscribe(self, topic: str) -> None:
        self._topics.discard(topic)

    def hand_off(self, topic: str, payload: bytes) -> Awaitable[None]:
        """Delivers before returning: the confirmation is already there."""
        deliver = self._deliver
        if deliver is None:
            raise Unavailable("relay is not running")
        if topic in self._topics:
            deliver(topic, payload)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.hand_off(topic, payload)
