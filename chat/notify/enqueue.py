"""Every node: stored messages → who to notify → presence → the store's outbox, off the ack's path.

The message path calls :meth:`Enqueuer.offer` once per newly stored message; it only puts the
message in a bounded in-memory queue and returns (a full queue drops it, with one warning
until the queue has drained). One worker task takes the queue in batches:

1. **Recipients.** A DM: the other member (from the channel's pair key, no read). A group or a
   room: the members the text mentions (:mod:`chat.notify.mentions`), minus the sender, each
   checked for membership. Channels are cached (their kind and name never change).
2. **Presence**, one query for every recipient of the batch: only users with no online device
   are notified. When presence cannot answer, everyone is treated as offline — an extra push
   is better than a missing one — and that is logged once per outage.
3. **Outbox**: one ``outbox_put`` for the batch. Notification IDs are deterministic per
   (message, recipient), so a batch that failed is simply processed again (a few times, with
   backoff) and a double enqueue stays one notification.

**The window.** Between the ack and step 3 the notification exists only in this process's
memory. A node killed there (SIGKILL, OOM, power loss) loses the notifications of messages it
acked in the last moments — at most the queue's contents, normally the last few milliseconds.
A clean stop (SIGTERM) drains the queue into the outbox first (bounded by ``close_timeout_s``).
Killed before its ack went out, the node loses nothing: the client retries, and a retry
answered from the store of a message that another process stored is offered again
(``MessageService``; the deterministic IDs keep that one notification — at worst sent twice
with the same ``Idempotency-Key``). Closing the window
after the ack would mean writing to the outbox before acking, which the message path does
not pay for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from chat.models import Channel, ChannelKind, Message
from chat.notify import payload
from chat.notify.mentions import mentions
from chat.notify.outage import Outage
from chat.notify.payload import Reason
from chat.store.outbox import Notification
from presence.state import ONLINE, UserPresence

log = logging.getLogger(__name__)

PRESENCE_CHUNK = 1000  # users per presence query (a batch rarely needs more than one)


class EnqueueStore(Protocol):
    """What the enqueuer reads and writes (a subset of the MessageStore)."""

    async def get_channel(self, channel_id: int) -> Channel | None: ...

    async def is_member(self, channel_id: int, user: str) -> bool: ...

    async def outbox_put(self, notifications: Sequence[Notification]) -> None: ...


class PresenceQuery(Protocol):
    """Who is online (the node's presence tracker)."""

    async def query(self, users: Sequence[str]) -> Mapping[str, UserPresence]: ...


class Enqueuer:
    """The bounded queue and its one worker (see the module docstring)."""

    def __init__(
        self,
        store: EnqueueStore,
        presence: PresenceQuery,
        *,
        on_enqueued: Callable[[], None] | None = None,
        # Limits
        queue_max: int = 10_000,
        batch_max: int = 256,
        channels_cached: int = 10_000,
        # Timing
        retry_delays_s: Sequence[float] = (0.2, 1.0, 5.0),
        close_timeout_s: float = 5.0,
    ) -> None:
        self._store = store
        self._presence = presence
        # Tells the deliverer that something is due now (it may be on this node).
        self._on_enqueued = on_enqueued
        self._queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=queue_max)
        self._batch_max = batch_max
        # Channel ID → channel: kind and name never change, so entries never go stale.
        self._channels: OrderedDict[int, Channel] = OrderedDict()
        self._channels_cached = channels_cached
        # Waits between processing attempts of a failing batch; after the last it is dropped.
        self._retry_delays_s = tuple(retry_delays_s)
        self._close_timeout_s = close_timeout_s
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._overflowing = False  # the queue was full: warned once until it drains to half
        self._presence_outage = Outage("notifications: presence", log)
        self._store_outage = Outage("notifications: message store", log)
        self.enqueued = 0  # notifications put in the outbox
        self.dropped = 0  # messages never processed (queue full, closed, or failing for good)
        self._lost = 0  # messages dropped in the current store outage: told when it ends

    def offer(self, message: Message) -> None:
        """A message was just stored: queue it (O(1), never waits, never raises)."""
        if self._closed:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            if not self._overflowing:
                self._overflowing = True
                log.warning("notifications: %d messages wait to be checked; dropping new ones until the queue drains", self._queue.maxsize)

    async def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="notify-enqueue")

    async def close(self) -> None:
        """Stop taking messages and put what is queued in the outbox (bounded), then stop."""
        self._closed = True
        if self._worker is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._close_timeout_s):
                await self._queue.join()
        left = self._queue.qsize()
        if left:
            self.dropped += left
            log.warning("notifications: stopped with %d messages unchecked; their notifications are lost", left)
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._handle(batch)
            except Exception:  # a bug must not stop the worker
                log.exception("notifications: a batch of %d messages failed", len(batch))
                self.dropped += len(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if self._overflowing and self._queue.qsize() <= self._queue.maxsize // 2:
                self._overflowing = False

    async def _handle(self, batch: list[Message]) -> None:
        """Process ``batch``, again after each failure while retry delays are left, then drop it."""
        for delay in (*self._retry_delays_s, None):
            try:
                await self.process(batch)
            except Exception as exc:  # noqa: BLE001 - the store failed (Unavailable) or timed out
                self._store_outage.failed(f"{type(exc).__name__}: {exc}", "retrying each batch a few times, then dropping it")
                if delay is None:
                    self.dropped += len(batch)
                    self._lost += len(batch)
                    return
                await asyncio.sleep(delay)  # a backoff, not a wait for an event
                continue
            if self._lost:
                log.warning("notifications: the notifications of %d messages were dropped while the message store failed", self._lost)
                self._lost = 0
            self._store_outage.recovered()
            return

    async def process(self, messages: Sequence[Message]) -> list[Notification]:
        """Put the notifications ``messages`` call for in the outbox; returns them.

        Raises the store's error (nothing or part of it was put; processing again is safe)."""
        wanted: list[tuple[Message, Channel, str, Reason]] = []
        for message in messages:
            channel = await self._channel(message.channel)
            if channel is not None:
                wanted += [(message, channel, user, reason) for user, reason in await self._recipients(message, channel)]
        if not wanted:
            return []
        offline = await self._offline(sorted({user for _, _, user, _ in wanted}))
        notes = [payload.render(m, c, user, reason) for m, c, user, reason in wanted if user in offline]
        if notes:
            await self._store.outbox_put(notes)
            self.enqueued += len(notes)
            if self._on_enqueued is not None:
                self._on_enqueued()
        return notes

    async def _channel(self, channel_id: int) -> Channel | None:
        channel = self._channels.get(channel_id)
        if channel is not None:
            self._channels.move_to_end(channel_id)
            return channel
        channel = await self._store.get_channel(channel_id)
        if channel is not None:
            self._channels[channel_id] = channel
            if len(self._channels) > self._channels_cached:
                self._channels.popitem(last=False)
        return channel

    async def _recipients(self, message: Message, channel: Channel) -> list[tuple[str, Reason]]:
        if channel.kind is ChannelKind.DM:
            pair = (channel.dm_key or "").split("\n")
            return [(user, "dm") for user in pair if user and user != message.sender][:1]
        candidates = [user for user in mentions(message.text) if user != message.sender]
        if not candidates:
            return []
        members = await asyncio.gather(*(self._store.is_member(channel.id, user) for user in candidates))
        return [(user, "mention") for user, member in zip(candidates, members, strict=True) if member]

    async def _offline(self, users: list[str]) -> set[str]:
        """The users with no online device; all of them when presence cannot tell."""
        online: set[str] = set()
        try:
            for i in range(0, len(users), PRESENCE_CHUNK):
                answer = await self._presence.query(users[i : i + PRESENCE_CHUNK])
                online.update(user for user, state in answer.items() if state.status == ONLINE)
        except Exception as exc:  # noqa: BLE001 - presence is down or slow: notify rather than miss
            self._presence_outage.failed(f"{type(exc).__name__}: {exc}", "notifying as if every recipient were offline")
            return set(users)
        self._presence_outage.recovered()
        return set(users) - online
