"""The WebSocket ops: one handler per command, and the life of a connection around them.

A session hands every parsed command to :meth:`Gateway.handle`, which dispatches on its type.
Handlers reply through the session (``push``) and call the services; a :class:`ChatError` they
raise becomes the ``error`` frame answering the request (the session does that).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chat import commands, protocol
from chat.access import Access
from chat.commands import ChannelRef, Command
from chat.errors import BadRequest, ChatError, FrameId, NotFound
from chat.hub import Hub
from chat.service import MessageService
from chat.session import Session
from presence.tracker import PresenceTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    node_id: str
    replay_cap: int  # messages replayed per channel on subscribe + since before `resync`


class Gateway:
    """Runs the protocol's ops for every socket of this node."""

    def __init__(self, *, messages: MessageService, access: Access, hub: Hub, presence: PresenceTracker, settings: GatewaySettings) -> None:
        self._messages = messages
        self._access = access
        self._hub = hub
        self._presence = presence
        self._settings = settings
        self._handlers: dict[type[Any], Callable[[Session, Any], Awaitable[None]]] = {
            commands.Subscribe: self.subscribe,
            commands.Unsubscribe: self.unsubscribe,
            commands.Send: self.send,
            commands.History: self.history,
            commands.Heartbeat: self.heartbeat,
            commands.Typing: self.typing,
            commands.Read: self.read,
            commands.PresenceQuery: self.presence,
            commands.PresenceSubscribe: self.presence_subscribe,
            commands.PresenceUnsubscribe: self.presence_unsubscribe,
        }

    # A connection's life

    async def open(self, session: Session) -> None:
        """A socket was accepted: say hello (its first frame), start it, route the user's
        events to it, mark the device online."""
        session.push(
            protocol.frame(
                "hello",
                {
                    "node_id": self._settings.node_id,
                    "session_id": session.session_id,
                    "user": session.user,
                    "heartbeat_interval_ms": self._presence.heartbeat_interval_ms,
                },
            )
        )
        session.start()
        await self._hub.join_user(session)
        await self._presence.connected(session.user, session.session_id)

    async def close(self, session: Session) -> None:
        """The socket is gone: detach it from the hub, and from presence if the client left on
        purpose (a dropped connection stays online until the presence timeout: no flapping
        while a phone goes through a tunnel; a drained node's clients reconnect elsewhere)."""
        session.stop()
        for channel in list(session.delivery.streams):
            session.delivery.close_stream(channel)
            await self._hub.leave_channel(channel, session)
        for user in list(session.watching):
            await self._hub.unwatch(user, session)
        session.watching.clear()
        await self._hub.leave_user(session)
        if session.left_cleanly and not session.moving:
            await self._presence.disconnected(session.user, session.session_id)

    async def handle(self, session: Session, command: Command) -> None:
        await self._handlers[type(command)](session, command)

    def handle_now(self, session: Session, command: Command) -> bool:
        """Handle a command that needs no await, at once (heartbeats); False: use :meth:`handle`."""
        if type(command) is not commands.Heartbeat:
            return False
        self._presence.heartbeat(session.user, session.session_id)
        session.push(protocol.reply("heartbeat_ack", command.id))
        return True

    # The ops

    async def subscribe(self, session: Session, command: commands.Subscribe) -> None:
        for ref in command.channels:
            after = None if ref.id is None else command.since.get(ref.id)
            await self._subscribe(session, command.id, ref, after)

    async def _subscribe(self, session: Session, frame_id: FrameId, ref: ChannelRef, after: int | None) -> None:
        try:
            if ref.id is None:
                raise NotFound(f"no channel {ref.raw!r}")
            channel = ref.id
            await self._access.require_member(session.principal, channel)
            self._messages.entered(channel)
            if session.delivery.open(channel):
                try:
                    await self._hub.join_channel(channel, session)
                except ChatError:
                    session.delivery.cancel(channel)
                    raise
        except ChatError as error:
            error.extra["channel"] = ref.raw
            session.push(protocol.error_frame(error.answering(frame_id)))
            return
        session.push(protocol.reply("subscribed", frame_id, {"channel": ref.raw}))
        upper: int | None = None
        last: int | None = None
        complete = after is None
        try:
            if after is not None:
                replay = await self._messages.replay(channel, after, cap=self._settings.replay_cap)
                upper = replay.upper
                async for message in replay:
                    await session.room()
                    session.replayed(channel, message.id, protocol.frame("message", {"message": message.to_wire()}))
                    last = message.id
                complete = replay.complete
        finally:
            # Also on failure: an unfinished replay leaves the channel owed a resync.
            session.finish(channel, after=after, upper=upper, last=last, complete=complete)

    async def unsubscribe(self, session: Session, command: commands.Unsubscribe) -> None:
        for ref in command.channels:
            if ref.id is not None and session.delivery.close_stream(ref.id):
                await self._hub.leave_channel(ref.id, session)
        session.push(protocol.reply("unsubscribed", command.id, {"channels": [ref.raw for ref in command.channels]}))

    async def send(self, session: Session, command: commands.Send) -> None:
        message, _ = await self._messages.send(session.principal, command)
        session.push(protocol.reply("ack", command.id, {"message": message.to_wire()}))

    async def history(self, session: Session, command: commands.History) -> None:
        page = await self._messages.history(session.principal, command)
        fields = {"channel": str(command.channel), "messages": [m.to_wire() for m in page.messages], "has_more": page.has_more}
        session.push(protocol.reply("history", command.id, fields))

    async def heartbeat(self, session: Session, command: commands.Heartbeat) -> None:
        self.handle_now(session, command)

    async def typing(self, session: Session, command: commands.Typing) -> None:
        await self._messages.typing(session.principal, command, session.session_id)

    async def read(self, session: Session, command: commands.Read) -> None:
        await self._messages.mark_read(session.principal, command, session.session_id)

    async def presence(self, session: Session, command: commands.PresenceQuery) -> None:
        session.push(protocol.reply("presence", command.id, {"users": await self._query(command.users)}))

    async def presence_subscribe(self, session: Session, command: commands.PresenceSubscribe) -> None:
        """Watch users: their transitions are pushed from now on; the reply is their presence now."""
        new = [u for u in command.users if u not in session.watching]
        if len(session.watching) + len(new) > commands.MAX_WATCHED_PER_SOCKET:
            raise BadRequest(f"a socket watches at most {commands.MAX_WATCHED_PER_SOCKET} users")
        for user in new:
            session.watching.add(user)
            try:
                await self._hub.watch(user, session)
            except ChatError:
                session.watching.discard(user)
                raise
        session.push(protocol.reply("presence", command.id, {"users": await self._query(command.users)}))

    async def presence_unsubscribe(self, session: Session, command: commands.PresenceUnsubscribe) -> None:
        for user in command.users:
            if user in session.watching:
                session.watching.discard(user)
                await self._hub.unwatch(user, session)
        session.push(protocol.reply("presence_unsubscribed", command.id, {"users": list(command.users)}))

    async def _query(self, users: tuple[str, ...]) -> dict[str, object]:
        return {u: p.to_wire() for u, p in (await self._presence.query(users)).items()}
