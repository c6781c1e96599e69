"""Hands each channel's messages to the relay in ID order, as soon as their stores allow.

A send mints its ID and joins its channel's queue in the same step (no ``await`` in
between), so queue order is ID order. Stores finish in any order; when one finishes, every
message at the head of the queue whose store is done is handed off in one go, in order. A
message therefore waits only for the stores of the messages minted before it, never for a
relay round trip or an extra loop iteration per predecessor: a hot channel publishes as
fast as its messages are stored.

Every slot is settled (ready or skipped) by its sender's ``finally``, and every store call
is bounded, so the head always moves on. As a last resort a sender that waited longer than
its bound hands its own message off out of order rather than never.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

# (channel, payload) → the relay's confirmation, or None if the relay refused at once.
HandOff = Callable[[int, bytes], Awaitable[None] | None]

_WAITING, _READY, _SKIP, _HANDED = range(4)


class Slot:
    """One minted message's place in its channel's queue."""

    __slots__ = ("channel", "message_id", "payload", "state", "handed")

    def __init__(self, channel: int, message_id: int, handed: asyncio.Future[Awaitable[None] | None]) -> None:
        self.channel = channel
        self.message_id = message_id
        self.payload: bytes | None = None
        self.state = _WAITING
        # Resolved once this slot is handed off (with the relay's confirmation) or skipped (None).
        self.handed = handed


class Sequencer:
    """Per-channel queues of minted messages (see the module docstring)."""

    def __init__(self, hand_off: HandOff) -> None:
        self._hand_off = hand_off
        self._queues: dict[int, collections.deque[Slot]] = {}

    def join(self, channel: int, message_id: int) -> Slot:
        """Call right after minting, with no ``await`` in between."""
        slot = Slot(channel, message_id, asyncio.get_running_loop().create_future())
        queue = self._queues.get(channel)
        if queue is None:
            queue = self._queues[channel] = collections.deque()
        queue.append(slot)
        return slot

    def ready(self, slot: Slot, payload: bytes | None) -> None:
        """The slot's store is done: publish ``payload``, or nothing (None: failed, duplicate)."""
        if slot.state != _WAITING:
            return
        slot.payload = payload
        slot.state = _READY if payload is not None else _SKIP
        self._flush(slot.channel)

    async def handed(self, slot: Slot, timeout_s: float) -> Awaitable[None] | None:
        """Wait until the slot is handed off; returns the relay's confirmation (or None)."""
        if not slot.handed.done():
            try:
                await asyncio.wait_for(asyncio.shield(slot.handed), timeout_s)
            except TimeoutError:
                # An earlier store is stuck past every bound it has: give up order, not liveness.
                log.warning("message %d waited %.1fs for earlier sends of channel %d; publishing it out of order", slot.message_id, timeout_s, slot.channel)
                self._hand(slot)
        return slot.handed.result()

    def tail(self, channel: int) -> asyncio.Future[Awaitable[None] | None] | None:
        """Done once every message minted so far in ``channel`` is handed off or skipped."""
        queue = self._queues.get(channel)
        return queue[-1].handed if queue else None

    def _flush(self, channel: int) -> None:
        queue = self._queues.get(channel)
        while queue and queue[0].state != _WAITING:
            slot = queue.popleft()
            if slot.state == _READY:
                self._hand(slot)
            elif slot.state == _SKIP and not slot.handed.done():
                slot.handed.set_result(None)
        if queue is not None and not queue:
            del self._queues[channel]

    def _hand(self, slot: Slot) -> None:
        if slot.state != _READY:
            return
        slot.state = _HANDED
        payload, slot.payload = slot.payload, None
        assert payload is not None
        confirmation = self._hand_off(slot.channel, payload)
        if not slot.handed.done():
            slot.handed.set_result(confirmation)
