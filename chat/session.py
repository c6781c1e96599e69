"""One client socket: its outbox and writer, its channel streams, its requests.

Writing. Every frame for the socket goes through a bounded outbox drained by one
writer task, so a slow reader only ever slows itself. When live messages would
overflow the outbox, they are dropped *for that channel* and the socket is owed a
``resync {channel}`` (sent once the outbox has drained to half); the client then
recovers the gap from the store. Control frames (acks, replies) are never dropped:
the client's own request rate bounds them.

Subscribing with ``since``. Live messages of the channel are held back while the
store is replayed, then released with duplicates removed; with a node-local relay the
replay stops at an ID bound past which everything arrives live, so the seam is
gap-free and in ID order (see ``ChatService.replay_bound``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Protocol

import orjson

from chat import protocol
from chat.errors import (
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    ChatError,
    Internal,
    NotFound,
    RateLimited,
    TooLarge,
)
from chat.models import Message, Principal
from chat.protocol import Command, FrameId
from chat.ratelimit import TokenBucket

if TYPE_CHECKING:
    from chat.hub import Hub
    from chat.service import ChatService
    from presence.tracker import PresenceTracker

log = logging.getLogger(__name__)

REPLAY_PAGE = 200
# Before an abusive client is closed, its queued replies are written for at most this long.
ABUSE_FLUSH_S = 1.0


class Transport(Protocol):
    """What a session needs from its socket (the Starlette WebSocket in production)."""

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int, reason: str = "") -> None: ...


class ChannelStream:
    """Delivery state of one subscribed channel on one socket."""

    __slots__ = ("replaying", "pending", "gapped", "lo", "hi")

    def __init__(self) -> None:
        # While True a subscribe is replaying the store: live messages wait in `pending`.
        self.replaying = False
        self.pending: list[tuple[int, str]] = []
        # Live messages were dropped; a `resync` is owed and live delivery is paused until it is sent.
        self.gapped = False
        # Every message of the channel with lo <= id <= hi has been sent to this socket (0, 0: none),
        # so a re-subscribe with an older `since` does not send them twice.
        self.lo = 0
        self.hi = 0

    def covered(self, message_id: int) -> bool:
        return self.lo <= message_id <= self.hi

    def sent_live(self, message_id: int) -> None:
        if self.hi == 0:
            self.lo = message_id
        if message_id > self.hi:
            self.hi = message_id


class Session:
    """State and behaviour of one connected client (one device)."""

    def __init__(
        self,
        transport: Transport,
        principal: Principal,
        *,
        service: ChatService,
        hub: Hub,
        presence: PresenceTracker,
        node_id: str,
    ) -> None:
        settings = service.settings
        self.transport = transport
        self.principal = principal
        self.user = principal.user
        self.session_id = uuid.uuid4().hex[:16]
        self.service = service
        self.hub = hub
        self.presence = presence
        self.node_id = node_id
        self.streams: dict[int, ChannelStream] = {}
        # Limits
        self._limit = settings.send_queue_frames
        # Control frames may exceed `_limit` by this much before the client counts as not reading.
        self._hard_limit = settings.send_queue_frames * 2 + 256
        self._replay_cap = settings.replay_cap
        self._bucket = TokenBucket(settings.rate_per_s, settings.rate_burst, time.monotonic())
        self._flood_strikes = settings.flood_strikes
        self._oversize_strikes = settings.oversize_strikes
        self._refused = 0  # consecutive rate-limited frames
        self._oversize = 0  # too_large frames so far
        # Writing
        self._outbox: deque[str] = deque()
        self._wake = asyncio.Event()  # writer: there is something to send
        self._space = asyncio.Event()  # replay: the outbox has room again
        self._space.set()
        self._owed: set[int] = set()  # channels owed a resync
        # Created only by flush() (draining, abuse): resolved by the writer once the outbox is empty.
        self._flushed: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.close_code: int | None = None

    def __repr__(self) -> str:
        return f"<Session {self.session_id} user={self.user}>"

    # Lifecycle

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.session_id}")
        await self.hub.join_user(self)
        await self.presence.connected(self.user, self.session_id)
        self.push(
            protocol.encode_text(
                "hello",
                {
                    "node_id": self.node_id,
                    "session_id": self.session_id,
                    "user": self.user,
                    "heartbeat_interval_ms": self.service.settings.heartbeat_interval_ms,
                },
            )
        )

    async def stop(self) -> None:
        """Detach from the hub and presence; the writer finishes what is queued if it can."""
        self._closing = True
        for channel_id in list(self.streams):
            await self.hub.leave_channel(channel_id, self)
        self.streams.clear()
        await self.hub.leave_user(self)
        await self.presence.disconnected(self.user, self.session_id)
        self._wake.set()
        if self._writer is not None:
            self._writer.cancel()

    async def flush(self, timeout_s: float) -> None:
        """Wait (bounded) until the outbox is written; used when draining."""
        if not self._outbox or self._writer is None or self._writer.done():
            return
        if self._flushed is None or self._flushed.done():
            self._flushed = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._flushed), timeout_s)
        except TimeoutError:
            pass

    async def close(self, code: int, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code = code
        self._closing = True
        try:
            await self.transport.close(code, reason)
        except Exception:  # noqa: BLE001 - already gone
            pass

    # Writing

    def push(self, frame: str) -> None:
        """Queue a frame that must not be dropped (a reply, an ack, a read marker)."""
        if self._closing:
            return
        if len(self._outbox) >= self._hard_limit:
            # The client sends requests but does not read the answers.
            self._closing = True
            asyncio.get_running_loop().create_task(self.close(CLOSE_POLICY, "not reading"))
            return
        self._outbox.append(frame)
        self._wake.set()

    async def _push_flow(self, frame: str) -> None:
        """Queue a replayed frame, waiting while the outbox is full (this socket only)."""
        while len(self._outbox) >= self._limit and not self._closing:
            self._space.clear()
            await self._space.wait()
        self.push(frame)

    def deliver_message(self, channel_id: int, message_id: int, frame: str) -> None:
        """A live message from the hub (called on the loop; must not block)."""
        stream = self.streams.get(channel_id)
        if stream is None or self._closing:
            return
        if stream.replaying:
            if len(stream.pending) >= self._limit:
                stream.gapped = True
                stream.pending.clear()
            elif not stream.gapped:
                stream.pending.append((message_id, frame))
            return
        if stream.gapped:
            return
        if len(self._outbox) >= self._limit:
            self._gap(channel_id, stream)
            return
        self._outbox.append(frame)
        stream.sent_live(message_id)
        self._wake.set()

    def deliver_ephemeral(self, channel_id: int, frame: str) -> None:
        """Typing and the like: sent if there is room, otherwise silently dropped."""
        stream = self.streams.get(channel_id)
        if stream is None or stream.replaying or stream.gapped or self._closing:
            return
        if len(self._outbox) < self._limit:
            self._outbox.append(frame)
            self._wake.set()

    def gap(self, channel_id: int) -> None:
        """The relay may have lost messages of this channel: owe the socket a resync."""
        stream = self.streams.get(channel_id)
        if stream is not None:
            self._gap(channel_id, stream)
            self._pay_resyncs()

    def _gap(self, channel_id: int, stream: ChannelStream) -> None:
        stream.gapped = True
        stream.lo = stream.hi = 0
        self._owed.add(channel_id)

    def _pay_resyncs(self) -> None:
        if not self._owed or len(self._outbox) > self._limit // 2:
            return
        for channel_id in sorted(self._owed):
            stream = self.streams.get(channel_id)
            if stream is None or stream.replaying:
                continue  # the running subscribe settles it
            stream.gapped = False
            self._outbox.append(protocol.encode_text("resync", {"channel": str(channel_id)}))
        self._owed = {c for c in self._owed if c in self.streams and self.streams[c].replaying}
        self._wake.set()

    def kicked(self, channel_id: int, frame: str) -> None:
        """The user was removed from the channel (on any node): end the subscription."""
        if self.streams.pop(channel_id, None) is None:
            return
        self._owed.discard(channel_id)
        self.push(frame)
        asyncio.get_running_loop().create_task(self.hub.leave_channel(channel_id, self))

    async def _write_loop(self) -> None:
        outbox = self._outbox
        send = self.transport.send_text
        try:
            while True:
                while not outbox:
                    if self._flushed is not None and not self._flushed.done():
                        self._flushed.set_result(None)
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                await send(outbox.popleft())
                if len(outbox) <= self._limit // 2:
                    if not self._space.is_set():
                        self._space.set()
                    if self._owed:
                        self._pay_resyncs()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the socket is gone; the reader sees it too
            self._closing = True
            self._space.set()
            if self._flushed is not None and not self._flushed.done():
                self._flushed.set_result(None)

    # Reading

    async def receive(self, raw: str | bytes) -> None:
        """Handle one client frame. Errors become error frames; the socket stays open
        unless the client is abusive."""
        now = time.monotonic()
        wait_s = self._bucket.take(now)
        if wait_s:
            self._refused += 1
            if self._refused >= self._flood_strikes:
                await self.flush(ABUSE_FLUSH_S)  # the client gets the replies and errors it earned
                await self.close(CLOSE_POLICY, "flooding")
                return
            self.push(protocol.error_frame(RateLimited("slow down", retry_after_ms=max(1, int(wait_s * 1000) + 1)), _peek_id(raw)))
            return
        self._refused = 0
        frame_id: FrameId = None
        try:
            command = protocol.parse_frame(raw, max_message_chars=self.service.settings.max_message_chars)
            frame_id = command.id
            await self._handle(command)
        except ChatError as error:
            frame_id = getattr(error, "frame_id", frame_id)
            self.push(protocol.error_frame(error, frame_id))
            if isinstance(error, TooLarge):
                self._oversize += 1
                if self._oversize >= self._oversize_strikes:
                    await self.flush(ABUSE_FLUSH_S)
                    await self.close(CLOSE_TOO_BIG, "repeated oversize messages")
        except Exception:
            log.exception("unexpected error handling a frame from %s", self.user)
            self.push(protocol.error_frame(Internal("internal error"), frame_id))

    def reject_oversize(self) -> None:
        """A frame over the cap was read partially by a custom transport (uvicorn closes itself)."""
        self._oversize += 1

    async def _handle(self, command: Command) -> None:
        match command:
            case protocol.Send():
                frame_id = command.id

                def ack(message: Message, created: bool) -> None:
                    self.push(protocol.reply("ack", frame_id, {"message": message.to_wire()}))

                await self.service.send(self.principal, command.channel, command.text, command.client_msg_id, on_stored=ack)
            case protocol.Subscribe():
                for channel_id, raw in zip(command.channels, command.raw_channels):
                    await self._subscribe(command.id, channel_id, raw, command.since)
            case protocol.Unsubscribe():
                for channel_id in command.channels:
                    if channel_id is not None and self.streams.pop(channel_id, None) is not None:
                        self._owed.discard(channel_id)
                        await self.hub.leave_channel(channel_id, self)
                self.push(protocol.reply("unsubscribed", command.id, {"channels": list(command.raw_channels)}))
            case protocol.History():
                page = await self.service.history(
                    self.principal, command.channel, before=command.before, after=command.after, limit=command.limit
                )
                self.push(
                    protocol.reply(
                        "history",
                        command.id,
                        {
                            "channel": str(command.channel),
                            "messages": [m.to_wire() for m in page.messages],
                            "has_more": page.has_more,
                        },
                    )
                )
            case protocol.Heartbeat():
                await self.presence.heartbeat(self.user, self.session_id)
                self.push(protocol.reply("heartbeat_ack", command.id))
            case protocol.Typing():
                await self.service.typing(self.principal, command.channel, self.session_id)
            case protocol.Read():
                await self.service.mark_read(self.principal, command.channel, command.message_id, self.session_id)
            case protocol.Presence():
                states = await self.presence.query(list(command.users))
                self.push(protocol.reply("presence", command.id, {"users": {u: p.to_wire() for u, p in states.items()}}))

    async def _subscribe(self, frame_id: FrameId, channel_id: int | None, raw: str, since: dict[int, int]) -> None:
        try:
            if channel_id is None:
                raise NotFound(f"no channel {raw!r}")
            await self.service.require_member(self.principal, channel_id)
        except ChatError as error:
            error.extra["channel"] = raw
            self.push(protocol.error_frame(error, frame_id))
            return
        stream = self.streams.get(channel_id)
        if stream is None:
            stream = ChannelStream()
            stream.replaying = True
            self.streams[channel_id] = stream
            try:
                await self.hub.join_channel(channel_id, self)
            except ChatError as error:
                self.streams.pop(channel_id, None)
                error.extra["channel"] = raw
                self.push(protocol.error_frame(error, frame_id))
                return
        else:
            stream.replaying = True
        self.push(protocol.reply("subscribed", frame_id, {"channel": raw}))
        after = since.get(channel_id)
        upper: int | None = None
        replayed: set[int] = set()
        try:
            if after is not None:
                upper, replayed, complete = await self._replay(channel_id, stream, after)
                if not complete:
                    self._gap(channel_id, stream)
        finally:
            self._release_pending(channel_id, stream, after, upper, replayed)

    async def _replay(self, channel_id: int, stream: ChannelStream, after: int) -> tuple[int | None, set[int], bool]:
        """Send stored messages after ``after``; returns (upper bound, IDs sent, whether all were sent)."""
        upper, tail = self.service.replay_bound(channel_id)
        await self.service.settle(tail)
        before = None if upper is None else upper + 1
        skip_lo, skip_hi = stream.lo, stream.hi
        replayed: set[int] = set()
        cursor = after
        sent = 0
        has_more = False
        while sent < self._replay_cap:
            page = await self.service.store.history(channel_id, after=cursor, before=before, limit=min(REPLAY_PAGE, self._replay_cap - sent))
            for message in page.messages:
                sent += 1
                cursor = message.id
                if skip_lo <= message.id <= skip_hi:
                    continue
                replayed.add(message.id)
                await self._push_flow(protocol.encode_text("message", {"message": message.to_wire()}))
            has_more = page.has_more
            if not has_more or not page.messages:
                break
        if has_more:
            return upper, replayed, False
        if stream.hi == 0 or stream.lo > after + 1:
            stream.lo = after + 1
        stream.hi = max(stream.hi, upper if upper is not None else cursor)
        return upper, replayed, True

    def _release_pending(self, channel_id: int, stream: ChannelStream, after: int | None, upper: int | None, replayed: set[int]) -> None:
        pending, stream.pending = stream.pending, []
        stream.replaying = False
        if stream.gapped:
            self._owed.add(channel_id)
            self._pay_resyncs()
            return
        floor = max(after or 0, upper or 0)
        for message_id, frame in pending:
            if message_id <= floor or message_id in replayed:
                continue
            self.deliver_message(channel_id, message_id, frame)


def _peek_id(raw: str | bytes) -> FrameId:
    """The request's id for a refusal that does not parse the frame (rate limiting): best effort."""
    if len(raw) > 4096:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
