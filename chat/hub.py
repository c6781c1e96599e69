"""This node's fan-out: which local sessions want which channel and user topics.

The hub subscribes the relay to a topic while at least one local session needs it
(reference counted), and turns each relay delivery into writes to local sessions. A
frame arrives already encoded; the same ``str`` object goes to every socket, and no
task is created per message or per recipient: ``Session.deliver`` only appends to a
bounded outbox and wakes that socket's writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from chat import events
from chat.relay.base import Relay, channel_topic, user_topic

if TYPE_CHECKING:
    from chat.session import Session

log = logging.getLogger(__name__)


class _Interest:
    """Local subscribers of one topic, and the relay subscription they share."""

    __slots__ = ("sessions", "ready")

    def __init__(self, ready: asyncio.Task[None]) -> None:
        self.sessions: set[Session] = set()
        # Done once the relay delivers this topic; joiners wait for it so nothing
        # published after their join can be missed.
        self.ready = ready


class Hub:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._topics: dict[str, _Interest] = {}

    async def start(self) -> None:
        await self.relay.start(self._deliver, self._on_gap)

    @property
    def topic_count(self) -> int:
        return len(self._topics)

    async def join_channel(self, channel_id: int, session: Session) -> None:
        await self._join(channel_topic(channel_id), session)

    async def leave_channel(self, channel_id: int, session: Session) -> None:
        await self._leave(channel_topic(channel_id), session)

    async def join_user(self, session: Session) -> None:
        await self._join(user_topic(session.user), session)

    async def leave_user(self, session: Session) -> None:
        await self._leave(user_topic(session.user), session)

    async def _join(self, topic: str, session: Session) -> None:
        interest = self._topics.get(topic)
        if interest is None:
            interest = _Interest(asyncio.ensure_future(self.relay.subscribe(topic)))
            self._topics[topic] = interest
        interest.sessions.add(session)
        try:
            await asyncio.shield(interest.ready)
        except Exception:
            interest.sessions.discard(session)
            if self._topics.get(topic) is interest and not interest.sessions:
                del self._topics[topic]
            raise

    async def _leave(self, topic: str, session: Session) -> None:
        interest = self._topics.get(topic)
        if interest is None or session not in interest.sessions:
            return
        interest.sessions.discard(session)
        if interest.sessions:
            return
        del self._topics[topic]
        try:
            await self.relay.unsubscribe(topic)
        except Exception:  # noqa: BLE001 - a stale subscription only costs bandwidth
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
        kind = env.kind
        if kind == events.MESSAGE:
            for session in interest.sessions:
                session.deliver_message(env.channel, env.message_id, env.frame)
        elif kind == events.TYPING:
            for session in interest.sessions:
                if session.session_id != env.origin:
                    session.deliver_ephemeral(env.channel, env.frame)
        elif kind == events.READ:
            for session in interest.sessions:
                if session.session_id != env.origin:
                    session.push(env.frame)
        elif kind == events.GAP:
            for session in interest.sessions:
                session.gap(env.channel)
        elif kind == events.KICK:
            for session in list(interest.sessions):
                session.kicked(env.channel, env.frame)
        else:
            for session in interest.sessions:
                session.push(env.frame)

    def _on_gap(self, topics: Iterable[str]) -> None:
        for topic in topics:
            interest = self._topics.get(topic)
            if interest is None or not topic.startswith("c:"):
                continue
            channel_id = int(topic[2:])
            for session in interest.sessions:
                session.gap(channel_id)
