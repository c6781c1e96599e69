"""The message path, on ports only: send, history, the subscribe replay, typing, read markers.

send: check membership → mint a Snowflake → store durably → hand off to the relay in ID order
per channel → confirm → return (the caller acks). A message is either refused before it is
stored, or stored and then acked; publishing is best effort because every subscriber can
recover from the store: a message that could not be published is announced as a gap
(``chat.gaps``) and its channel's sockets get ``resync``.

There is one path for every relay. The ack waits for the relay's confirmation of the
hand-off, which the Relay contract defines as "anything handed off later, by any node, is
delivered after this" — so a reply never overtakes what it answers, on one node or many.
(The in-process relay confirms at once and fans out on the next loop turn, so there the ack
still leaves before a large room's fan-out.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson

from chat import commands, events, protocol
from chat.access import Access
from chat.errors import ChatError, RateLimited, Unavailable
from chat.gaps import GapAnnouncer
from chat.guards import NO_GUARD, SendGuard
from chat.ids import timestamp_ms
from chat.metrics.counters import MessageCounters
from chat.minter import IdMinter
from chat.models import Message, Page, Principal
from chat.ratelimit import KeyedLimiter
from chat.relay.base import Relay, channel_topic, user_topic
from chat.sequencer import Sequencer
from chat.store.base import MessageStore

log = logging.getLogger(__name__)

REPLAY_PAGE = 200  # messages per store read while replaying


class Replay:
    """The stored messages a subscribe replays: those after ``after``, up to the seam's bound.

    Iterate it for the messages in ID order (at most ``cap``); afterwards ``complete`` says
    whether that was all of them (False: more are stored, the client must page on).
    ``upper`` is the bound when the relay gives one (see ``Relay.single_node``): every ID at or
    below it is stored, every later one arrives live. None: read to the end, de-duplicate by ID.
    """

    def __init__(self, store: MessageStore, channel: int, after: int, upper: int | None, cap: int) -> None:
        self._store = store
        self._channel = channel
        self._after = after
        self.upper = upper
        self._cap = cap
        self.complete = False

    async def __aiter__(self) -> AsyncIterator[Message]:
        before = None if self.upper is None else self.upper + 1
        cursor, sent = self._after, 0
        while sent < self._cap:
            page = await self._store.history(self._channel, after=cursor, before=before, limit=min(REPLAY_PAGE, self._cap - sent))
            for message in page.messages:
                sent += 1
                cursor = message.id
                yield message
            if not page.has_more or not page.messages:
                self.complete = True
                return


@dataclass(frozen=True, slots=True)
class MessageLimits:
    store_timeout_s: float = 5.0  # bounds every wait for earlier sends of a channel
    history_max_bytes: int = 1024 * 1024  # a history page's encoded messages (at least one message)
    user_send_per_s: float = 1_000_000.0  # messages/s per user on this node, every socket and HTTP together
    user_send_burst: int = 1_000_000


class MessageService:
    """The message path. One per node; safe for concurrent use on one event loop."""

    def __init__(
        self,
        *,
        store: MessageStore,
        relay: Relay,
        minter: IdMinter,
        access: Access,
        limits: MessageLimits,
        counters: MessageCounters | None = None,
        guard: SendGuard = NO_GUARD,
        clock: Callable[[], float] = time.monotonic,
        on_stored: Callable[[Message], None] | None = None,
    ) -> None:
        self._store = store
        # What the message path did (metrics): plain ints and two cheap histograms.
        self.counters = counters if counters is not None else MessageCounters()
        # Hot-room protection: counts, refuses, lanes, batches, serves hot history (chat.guards).
        self._guard = guard
        self._relay = relay
        self._minter = minter
        self._access = access
        self._limits = limits
        self._clock = clock
        # One user's sends over all their sockets and HTTP (each socket also has its own bucket).
        self._user_sends = KeyedLimiter(limits.user_send_per_s, limits.user_send_burst)
        # Hands each channel's messages to the relay in ID order as their stores complete.
        self._sequencer = Sequencer(self._hand_off)
        self._gaps = GapAnnouncer(relay)
        # Told of each newly stored message (offline notifications); must return at once.
        self._on_stored = on_stored

    async def close(self) -> None:
        await self._gaps.close()

    @property
    def gaps_owed(self) -> int:
        """Channels with a stored message whose publish failed and whose gap is not yet announced."""
        return self._gaps.owed

    @property
    def gaps_announced(self) -> int:
        """Gap announcements published since the node started."""
        return self._gaps.announced

    async def send(self, principal: Principal, command: commands.Send) -> tuple[Message, bool]:
        """Store and publish a message; returns ``(message, created)`` (False on an idempotent retry).

        Returns once the message is durable and the relay confirmed it (or refused: then a gap
        is owed), so the caller may ack. A channel's next message is handed off as soon as this
        one is (written in order), not once it is confirmed: a hot channel is not held to one
        broker round trip per message.
        """
        channel, bot, counters = command.channel, principal.is_bot, self.counters
        started = time.perf_counter()
        if not bot:  # bots have their own per-user limit, in the guard (a dynamic setting)
            wait_s = self._user_sends.take(principal.user, self._clock())
            if wait_s:
                raise RateLimited("you are sending too fast", retry_after_ms=int(wait_s * 1000) + 1)
        # Refused before the membership read too, or a send whose cached membership expired
        # would ask a store known to be failing (and not be counted as shielded).
        self._guard.shield_send()
        await self._access.require_member(principal, channel)
        admitted = self._guard.admit_send(principal.user, channel, bot=bot)
        if admitted is not None:
            await admitted  # its storage lane is busy (bounded)
        batched = self._guard.batched(channel)
        message_id = await self._minter.mint()
        slot = self._sequencer.join(channel, message_id)  # no await since minting: ID order
        try:
            message = Message(message_id, channel, principal.user, command.text, timestamp_ms(message_id), command.client_msg_id)
            store_started = time.perf_counter()
            if batched:
                stored, created = await self._guard.write(message, self._orphaned)
            else:
                stored, created = await self._store.insert_message(message)
            counters.store_seconds.observe(time.perf_counter() - store_started)
            if not created:
                counters.deduplicated += 1
                # A retry. If this process minted the original, it published it (or announced a
                # gap). If another node — or this one before a restart — did, it may have died
                # between storing and publishing: announce a gap (the channel's sockets resync
                # from the store), so nothing acked stays missed live.
                if not self._minter.minted_here(stored.id):
                    self._gaps.missed(channel)
                    if self._on_stored is not None:
                        # It may have died before queueing the notifications, too. Their IDs
                        # are per (message, recipient): the outbox holds one of each, and one
                        # delivered already comes again with the same Idempotency-Key.
                        self._on_stored(stored)
                return stored, False
            counters.stored += 1
            self._guard.stored(stored)
            self._sequencer.ready(slot, _relay_payload(stored))
            if self._on_stored is not None:
                self._on_stored(stored)  # O(1): queued for chat.notify, never awaited here
            stored_at = time.perf_counter()
            confirmed = await self._sequencer.handed(slot, self._limits.store_timeout_s)
            if confirmed is not None:
                await self._confirm(confirmed, channel)
            done = time.perf_counter()
            counters.publish_seconds.observe(done - stored_at)
            counters.send_seconds.observe(done - started)
            return stored, True
        finally:
            self._sequencer.ready(slot, None)  # failed, duplicate or cancelled: the channel's queue moves on

    def _hand_off(self, channel: int, payload: bytes) -> Awaitable[None] | None:
        """Hand a message to the relay now; None if it refused at once (a gap is owed)."""
        try:
            return self._relay.hand_off(channel_topic(channel), payload)
        except ChatError:
            self.counters.publish_failures += 1
            self._missed(channel)
            return None

    async def _confirm(self, confirmed: Awaitable[None], channel: int) -> None:
        try:
            await confirmed
        except ChatError:
            self.counters.publish_failures += 1
            self._missed(channel)
        except asyncio.CancelledError:
            self.counters.publish_failures += 1
            self._missed(channel)  # stored, maybe never published: say so
            raise

    def _orphaned(self, message: Message) -> None:
        """A batched message stored after its sender stopped waiting: nobody handed it to the
        relay nor to notifications. Its channel's sockets resync; notifications are offered now."""
        self._missed(message.channel)
        if self._on_stored is not None:
            self._on_stored(message)

    def _missed(self, channel: int) -> None:
        # Stored is what counts: subscribers recover it from the store on resync. Debug only:
        # the relay warns once per outage, not once per message.
        log.debug("a stored message of channel %d was not published", channel)
        self._gaps.missed(channel)

    async def history(self, principal: Principal, command: commands.History) -> Page:
        """A page of history, cut to ``history_max_bytes`` of encoded messages: fewer messages
        with ``has_more`` rather than a reply of hundreds of megabytes (a message can be
        ~600 kB escaped). The cut keeps the messages nearest the cursor."""
        await self._access.require_member(principal, command.channel)
        page = await self._guard.history(command.channel, command.before, command.after, command.limit, self._read)
        return fit_page(page, self._limits.history_max_bytes, oldest_first=command.after is not None)

    def _read(self, channel: int, before: int | None, after: int | None, limit: int) -> Awaitable[Page]:
        return self._store.history(channel, before=before, after=after, limit=limit)

    def entered(self, channel: int) -> None:
        """A socket of this node subscribed to ``channel`` (hot-room detection counts it with joins)."""
        self._guard.entered(channel)

    async def replay(self, channel: int, after: int, *, cap: int) -> Replay:
        """The replay of a subscribe seam (the caller has checked membership).

        On a single-node relay every message of the channel is minted here: the bound is the
        minter's, and the replay starts once every send minted up to it has been handed off
        (so it is stored), waiting at most ``store_timeout_s``.
        """
        upper: int | None = None
        if self._relay.single_node:
            upper = self._minter.bound
            tail = self._sequencer.tail(channel)
            if tail is not None and not tail.done():
                try:
                    await asyncio.wait_for(asyncio.shield(tail), self._limits.store_timeout_s)
                except TimeoutError:
                    log.warning("gave up waiting %.1fs for earlier sends of a channel to publish", self._limits.store_timeout_s)
        return Replay(self._store, channel, after, upper, cap)

    async def typing(self, principal: Principal, command: commands.Typing, origin: str) -> None:
        await self._access.require_member(principal, command.channel)
        if not self._guard.typing(command.channel):
            return  # a hot room: typing is not fanned out (its members would drown in it)
        frame = protocol.encode("typing", {"channel": str(command.channel), "user": principal.user})
        await self._relay.publish(channel_topic(command.channel), events.pack(events.TYPING, command.channel, 0, origin, frame))

    async def mark_read(self, principal: Principal, command: commands.Read, origin: str) -> int:
        """Advance the caller's read position and tell their other devices; returns the position."""
        await self._access.require_member(principal, command.channel)
        position = await self._store.set_read(principal.user, command.channel, command.message_id)
        frame = protocol.encode("read", {"channel": str(command.channel), "message_id": str(position)})
        try:
            await self._relay.publish(user_topic(principal.user), events.pack(events.READ, command.channel, position, origin, frame))
        except Unavailable:
            log.warning("relay publish of a read marker failed; it is stored")
        return position


def fit_page(page: Page, max_bytes: int, *, oldest_first: bool) -> Page:
    """``page`` cut to ``max_bytes`` of encoded messages, keeping at least one. ``oldest_first``:
    the page travels towards newer messages (keep its start), else towards older (keep its end)."""
    messages = page.messages
    if len(messages) <= 1:
        return page
    order = messages if oldest_first else reversed(messages)
    kept, size = 0, 0
    for message in order:
        size += len(orjson.dumps(message.to_wire())) + 1
        if kept and size > max_bytes:
            break
        kept += 1
    if kept == len(messages):
        return page
    return Page(messages[:kept] if oldest_first else messages[len(messages) - kept :], True)


def _relay_payload(message: Message) -> bytes:
    """The relay envelope of a new message: its frame, encoded once for every node and socket."""
    return events.pack(events.MESSAGE, message.channel, message.id, "-", protocol.encode("message", {"message": message.to_wire()}))
