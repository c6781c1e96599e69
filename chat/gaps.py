"""Announcing messages that were stored but could not be published.

A message is acked once it is durable, even if the relay then fails to carry it: the
store is the truth. Subscribers that missed it live must still learn about it, or a
client would sit silently behind. When a publish fails, the channel is remembered here
and a ``gap`` envelope is published for it as soon as the relay takes one again; every
node that receives it tells that channel's sockets to ``resync`` from the store.

(A relay that lost its subscriber connection signals its own gap on reconnect; this
covers the other case: the publisher could not reach the relay while subscribers could.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from chat import events
from chat.errors import ChatError
from chat.relay.base import Relay, channel_topic

log = logging.getLogger(__name__)

_RETRY_MIN_S = 0.1
_RETRY_MAX_S = 2.0


class GapAnnouncer:
    """Publishes ``gap`` for each channel with an unpublished message, retrying until it goes out."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        # channel → a counter bumped on every miss (one entry however many messages it
        # missed). Insertion-ordered: channels are announced oldest first.
        self._owed: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Gap envelopes published since start (metrics).
        self.announced = 0

    @property
    def owed(self) -> int:
        return len(self._owed)

    def missed(self, channel_id: int) -> None:
        """A message of ``channel_id`` is stored but was not published."""
        if self._closed:
            return
        self._owed[channel_id] = self._owed.get(channel_id, 0) + 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._announce(), name="gap-announcer")

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _announce(self) -> None:
        delay = _RETRY_MIN_S
        announced = 0
        while self._owed:
            channel_id, misses = next(iter(self._owed.items()))
            try:
                await self.relay.publish(channel_topic(channel_id), gap_payload(channel_id))
            except ChatError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            delay = _RETRY_MIN_S
            # Missed again while this was in flight? Then it stays owed for another round:
            # this gap may have reached subscribers before that message was stored.
            if self._owed.get(channel_id) == misses:
                del self._owed[channel_id]
            else:
                self._owed[channel_id] = self._owed.pop(channel_id)  # to the back of the line
            announced += 1
            self.announced += 1
        # One line per outage, however many channels it touched.
        log.info("relay: announced %d gap(s); those channels' subscribers resync from the store", announced)


def gap_payload(channel_id: int) -> bytes:
    # No frame: each receiving socket sends its own `resync` (and pauses live delivery).
    return events.pack(events.GAP, channel_id, 0, "-", b"")
