"""In-process relay: the embedded single node's pub/sub."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable

from chat.errors import Unavailable
from chat.relay.base import DeliverFn, GapFn


class LocalRelay:
    """Delivers on the next turn of the event loop, in hand-off order.

    A hand-off is confirmed at once — nothing handed off later can overtake it, since delivery
    is one FIFO — and delivered a moment later, from one callback per burst of hand-offs. So a
    sender is acked before its message is fanned out to a large room, with the same code path
    as a shared relay. The queue holds only what was handed off during the current loop turn.
    """

    single_node = True

    def __init__(self) -> None:
        self._deliver: DeliverFn | None = None
        # Topics with local interest; publishing elsewhere is a no-op, as on a real broker.
        self._topics: set[str] = set()
        self._queue: deque[tuple[str, bytes]] = deque()
        self._scheduled = False
        self._confirmed: asyncio.Future[None] | None = None

    async def start(self, deliver: DeliverFn, on_gap: GapFn) -> None:
        self._deliver = deliver
        self._confirmed = asyncio.get_running_loop().create_future()
        self._confirmed.set_result(None)

    async def close(self) -> None:
        self._flush()
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
        if self._deliver is None or self._confirmed is None:
            raise Unavailable("relay is not running")
        if topic in self._topics:
            self._queue.append((topic, payload))
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        return self._confirmed  # one shared, already-resolved future: nothing to allocate

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.hand_off(topic, payload)

    def _flush(self) -> None:
        self._scheduled = False
        deliver, queue = self._deliver, self._queue
        while queue and deliver is not None:
            topic, payload = queue.popleft()
            deliver(topic, payload)
