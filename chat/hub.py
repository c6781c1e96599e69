"""This node's fan-out: which local subscribers want which channel and user topics.

The hub subscribes the relay to a topic while at least one local subscriber needs it
(reference counted), and turns each relay delivery into calls on local subscribers. A frame
arrives already encoded; it is wrapped once in a :class:`~chat.protocol.Frame` and the same
object goes to every socket, with no task per message or per recipient: a subscriber only
queues it and wakes its own writer.

A :class:`~chat.guards.FanoutPolicy` sees every live message first (hot-room protection: it
counts the fan-out, and may take a hot room's messages to hand them back in batches through
:meth:`Hub.deliver_batch`) and may drop typing and presence events of a hot room.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from chat import events
from chat.guards import NO_GUARD, FanoutPolicy
from chat.protocol import BatchFrame, Frame
from chat.relay.base import Relay, channel_topic, presence_topic, user_topic

log = logging.getLogger(__name__)

# The op of the frame each envelope kind carries (the frame is not decoded to learn it).
_OPS = {
    events.MESSAGE: "message",
    events.TYPING: "typing",
    events.READ: "read",
    events.KICK: "unsubscribed",
    events.JOINED: "joined",
    events.PRESENCE: "presence",
}


class Subscriber(Protocol):
    """What the hub needs from a local socket. Every method runs on the loop and must not block."""

    @property
    def user(self) -> str: ...

    @property
    def session_id(self) -> str: ...

    def deliver_message(self, channel: int, message_id: int, frame: Frame) -> None:
        """A live message of a subscribed channel, in ID order per channel (or a
        :class:`~chat.protocol.BatchFrame` of them, ``message_id`` its last)."""

    def deliver_ephemeral(self, channel: int, frame: Frame) -> None:
        """Typing and the like: dropped if the socket has no room."""

    def deliver_control(self, frame: Frame) -> None:
        """A frame for the user (read marker, joined): never dropped."""

    def deliver_presence(self, user: str, stamp: int, frame: Frame) -> None:
        """A presence transition of ``user`` (the same one may come through several channels)."""

    def gap(self, channel: int) -> None:
        """Messages of ``channel`` may have been lost on the way: owe the socket a resync."""

    def kicked(self, channel: int, frame: Frame) -> bool:
        """The user was removed from ``channel``: end the subscription with ``frame``.
        True if it was subscribed (the hub then drops it from the channel's topic)."""


class _Interest:
    """Local subscribers of one topic, and the relay subscription they share."""

    __slots__ = ("subscribers", "ready")

    def __init__(self, ready: asyncio.Future[None]) -> None:
        self.subscribers: set[Subscriber] = set()
        # Done once the relay delivers this topic; joiners wait for it so nothing
        # published after their join can be missed.
        self.ready = ready


class Hub:
    def __init__(self, relay: Relay, policy: FanoutPolicy = NO_GUARD) -> None:
        self._relay = relay
        self._policy = policy
        self._topics: dict[str, _Interest] = {}
        # Leaves scheduled by kicks (held so they are not garbage-collected mid-flight).
        self._leaving: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._relay.start(self._deliver, self._on_gap)

    async def join_channel(self, channel: int, subscriber: Subscriber) -> None:
        """Returns once every message of ``channel`` published from now on reaches ``subscriber``."""
        await self._join(channel_topic(channel), subscriber)

    async def leave_channel(self, channel: int, subscriber: Subscriber) -> None:
        await self._leave(channel_topic(channel), subscriber)

    async def join_user(self, subscriber: Subscriber) -> None:
        await self._join(user_topic(subscriber.user), subscriber)

    async def leave_user(self, subscriber: Subscriber) -> None:
        await self._leave(user_topic(subscriber.user), subscriber)

    async def watch(self, user: str, subscriber: Subscriber) -> None:
        """Route ``user``'s presence transitions to ``subscriber`` (``presence_subscribe``)."""
        await self._join(presence_topic(user), subscriber)

    async def unwatch(self, user: str, subscriber: Subscriber) -> None:
        await self._leave(presence_topic(user), subscriber)

    async def join_topic(self, topic: str, subscriber: Subscriber) -> None:
        """Route another topic's events to ``subscriber`` (e.g. hot-room reports between nodes)."""
        await self._join(topic, subscriber)

    async def leave_topic(self, topic: str, subscriber: Subscriber) -> None:
        await self._leave(topic, subscriber)

    def deliver_batch(self, channel: int, frame: BatchFrame) -> None:
        """Messages of ``channel`` the policy took, as one frame to every local subscriber."""
        interest = self._topics.get(channel_topic(channel))
        if interest is None:
            return
        last = frame.ids[-1]
        for subscriber in interest.subscribers:
            subscriber.deliver_message(channel, last, frame)

    async def _join(self, topic: str, subscriber: Subscriber) -> None:
        interest = self._topics.get(topic)
        if interest is None:
            interest = _Interest(asyncio.ensure_future(self._relay.subscribe(topic)))
            self._topics[topic] = interest
        interest.subscribers.add(subscriber)
        try:
            await asyncio.shield(interest.ready)
        except Exception:
            interest.subscribers.discard(subscriber)
            if self._topics.get(topic) is interest and not interest.subscribers:
                del self._topics[topic]
            raise

    async def _leave(self, topic: str, subscriber: Subscriber) -> None:
        interest = self._topics.get(topic)
        if interest is None or subscriber not in interest.subscribers:
            return
        interest.subscribers.discard(subscriber)
        if interest.subscribers:
            return
        del self._topics[topic]
        try:
            await self._relay.unsubscribe(topic)
        except Exception:
            log.warning("relay unsubscribe of %s failed", topic, exc_info=True)

    def _deliver(self, topic: str, payload: bytes) -> None:
        interest = self._topics.get(topic)
        if interest is None:
            return
        try:
            env = events.unpack(payload)
        except (ValueError, UnicodeDecodeError):
            log.warning("dropping malformed relay payload on %s", topic)
            return
        kind, channel, frame = env.kind, env.channel, Frame(env.frame, _OPS.get(env.kind, ""))
        if kind == events.MESSAGE:
            message_id = env.message_id
            if self._policy.message(channel, message_id, env.frame, len(interest.subscribers)):
                return  # a hot room's: it comes back in a batch
            for subscriber in interest.subscribers:
                subscriber.deliver_message(channel, message_id, frame)
        elif kind == events.TYPING:
            if self._policy.ephemeral(channel, kind):
                return
            for subscriber in interest.subscribers:
                if subscriber.session_id != env.origin:
                    subscriber.deliver_ephemeral(channel, frame)
        elif kind == events.READ:
            for subscriber in interest.subscribers:
                if subscriber.session_id != env.origin:
                    subscriber.deliver_control(frame)
        elif kind == events.PRESENCE:
            if channel and self._policy.ephemeral(channel, kind):
                return  # pushed through a hot room (a user's own presence topic has channel 0)
            user, mark = env.origin, env.message_id
            for subscriber in interest.subscribers:
                if subscriber.user != user:  # nobody watches themselves
                    subscriber.deliver_presence(user, mark, frame)
        elif kind == events.GAP:
            for subscriber in interest.subscribers:
                subscriber.gap(channel)
        elif kind == events.KICK:
            for subscriber in list(interest.subscribers):
                if subscriber.kicked(channel, frame):
                    task = asyncio.ensure_future(self.leave_channel(channel, subscriber))
                    self._leaving.add(task)
                    task.add_done_callback(self._leaving.discard)
        else:
            for subscriber in interest.subscribers:
                subscriber.deliver_control(frame)

    def _on_gap(self, topics: Iterable[str]) -> None:
        for topic in topics:
            interest = self._topics.get(topic)
            if interest is None or not topic.startswith("c:"):
                continue
            channel = int(topic[2:])
            for subscriber in interest.subscribers:
                subscriber.gap(channel)
