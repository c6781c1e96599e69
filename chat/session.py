"""One client socket's I/O: the reader, the writer, and the socket's limits.

What the socket is sent is decided by its :class:`~chat.delivery.Delivery` (pure); what a
request does is decided by the handler it was given (``chat.handlers``). The session moves
bytes between them and the socket, on one of two paths:

* **Direct** (``chat.wsproto.DirectSocket``, the production server): frames queued during a
  turn of the event loop leave in *one* ``write`` of pre-framed bytes, from one callback shared
  by every socket (:class:`~chat.flusher.Flusher`) — no writer task, no per-frame ASGI send, and the cost per
  delivery falls as the rate rises. A paused transport (the peer is not reading) keeps frames
  in the bounded outbox until it drains. Client frames arrive as calls; a heartbeat is answered
  on the spot, other requests go to the reader (the connection's ASGI task) in order.
* **ASGI** (any other server, Starlette's TestClient): one writer task drains the outbox with
  ``send_text`` per frame; the reader awaits ``receive``.

Either way a slow reader only slows itself, and each frame passes the socket's
:class:`~chat.ratelimit.FrameGuard` (rate limit, flood and oversize strikes) and is parsed into
a typed command. Errors become ``error`` frames answering the request's ``id``; only an
abusive client is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from chat import protocol
from chat.commands import Command
from chat.delivery import Delivery
from chat.errors import ChatError, CloseCode, Internal, RateLimited, TooLarge, translate
from chat.flag import Flag
from chat.metrics.counters import WireCounters
from chat.models import Principal
from chat.protocol import Frame
from chat.ratelimit import FrameGuard
from chat.wsproto import DirectSocket

if TYPE_CHECKING:
    from chat.flusher import Flusher

log = logging.getLogger(__name__)

# Before an abusive client is closed, its queued replies are written for at most this long.
ABUSE_FLUSH_S = 1.0
# A close that cannot be written within this long (the peer stopped reading) aborts instead.
CLOSE_TIMEOUT_S = 2.0
# Most bytes put on a transport in one write: a non-reading peer's buffer grows past its
# high-water mark by at most this much before the outbox holds the rest.
MAX_WRITE_BYTES = 256 * 1024

Handler = Callable[["Session", Command], Awaitable[None]]
#: Handles a command without awaiting, if it can (heartbeats); False: use the async handler.
InlineHandler = Callable[["Session", Command], bool]


class Transport(Protocol):
    """The ASGI path's socket (Starlette's WebSocket)."""

    @property
    def peer_code(self) -> int | None:
        """The code the client closed with, once it has gone (None: unknown yet)."""

    async def receive(self) -> str | bytes | None:
        """The next client frame, or None once the client has gone."""

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int, reason: str = "") -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionLimits:
    """Per-socket limits, from settings (see chat/config.py for units and defaults)."""

    max_message_chars: int
    queue_frames: int
    queue_bytes: int
    rate_per_s: float
    rate_burst: int
    flood_strikes: int
    oversize_strikes: int


class Session:
    """One connected client (one device): implements the hub's ``Subscriber`` and, on the
    direct path, the socket's ``FrameSink``."""

    def __init__(
        self,
        transport: Transport,
        principal: Principal,
        *,
        limits: SessionLimits,
        handler: Handler,
        inline: InlineHandler | None = None,
        direct: DirectSocket | None = None,
        flusher: Flusher | None = None,
        counters: WireCounters | None = None,
    ) -> None:
        self.principal = principal
        self.session_id = uuid.uuid4().hex[:16]
        self._counters = counters if counters is not None else WireCounters()  # the node's (metrics): plain ints
        self.delivery = Delivery(max_frames=limits.queue_frames, max_bytes=limits.queue_bytes, resync_frame=self._counters.counting_resyncs(protocol.resync))
        # Users this socket asked to watch (presence_subscribe).
        self.watching: set[str] = set()
        # Told to reconnect elsewhere (draining): its close is a move, not the device leaving.
        self.moving = False
        # Done once the socket said hello and joined its topics (the handshake's ASGI call waits).
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Set when we close the socket (the code sent), so the reader stops.
        self.close_code: int | None = None
        self._transport = transport
        self._handler = handler
        self._inline = inline
        self._max_message_chars = limits.max_message_chars
        self._guard = FrameGuard(
            rate=limits.rate_per_s,
            burst=limits.rate_burst,
            flood_strikes=limits.flood_strikes,
            oversize_strikes=limits.oversize_strikes,
            now=time.monotonic(),
        )
        # The direct path (None: ASGI) and the shared flusher that writes it.
        self._direct = direct if flusher is not None else None
        self._flusher = flusher
        self._dirty = False  # marked for the flusher's next run
        # Client frames (or commands already accepted) waiting for the reader (direct path),
        # and whether the reader is busy with one.
        self._inbox: list[str | bytes | Command] = []  # a few at most (reading pauses at 32)
        self._busy = False
        self._gone = False  # the client went away (direct path)
        self._wake = Flag()  # the writer or the reader has something to do
        self._room = Flag()  # the outbox is below its bounds again (replays wait for it)
        self._room_wanted = False  # a replay waits for room (a flag: the writer checks it per write)
        # Created only by flush() (draining, abuse): resolved once the outbox is empty.
        self._flushed: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._close_started = False

    def __repr__(self) -> str:
        return f"<Session {self.session_id} user={self.user}>"

    @property
    def user(self) -> str:
        return self.principal.user

    @property
    def left_cleanly(self) -> bool:
        """The client closed the socket on purpose (1000/1001), rather than dropping off: its
        device goes offline at once, where a drop waits for the presence timeout."""
        code = self._direct.peer_code if self._direct is not None else self._transport.peer_code
        return code in (1000, 1001)

    # Lifecycle

    def start(self) -> None:
        if self._direct is not None:
            self._direct.attach(self)
        else:
            self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.session_id}")

    async def run(self) -> None:
        """Read and handle frames until the client goes or the session is closed."""
        if self._direct is None:
            receive = self._transport.receive
            while self.close_code is None:
                raw = await receive()
                if raw is None:
                    return
                await self.receive(raw)
            return
        inbox, direct = self._inbox, self._direct
        while self.close_code is None and not self._gone:
            if not inbox:
                self._busy = False
                self._wake.clear()
                await self._wake.wait()
                continue
            self._busy = True
            item = inbox.pop(0)
            try:
                if isinstance(item, (str, bytes)):
                    await self.receive(item)
                else:
                    await self._dispatch(item)
            finally:
                direct.handled()

    def stop(self) -> None:
        """The socket is gone: stop writing (whatever is still queued is dropped)."""
        self._closing = True
        self._wake.set()
        self._room.set()
        self._resolve_flushed()
        if self._writer is not None:
            self._writer.cancel()

    async def flush(self, timeout_s: float) -> None:
        """Wait (bounded) until everything queued is written; used when draining."""
        if not self.delivery.frames or self._closing:
            return
        if self._flushed is None or self._flushed.done():
            self._flushed = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._flushed), timeout_s)
        except TimeoutError:
            pass

    async def close(self, code: CloseCode, reason: str = "") -> None:
        """Close the socket with ``code`` (once; later calls return at once)."""
        if self._close_started:
            return
        self._close_started = True
        self._closing = True
        self._room.set()
        direct = self._direct
        if direct is not None and direct.paused:
            direct.abort()  # a close frame would queue behind what the peer is not reading
        else:
            try:
                await asyncio.wait_for(self._transport.close(code, reason), CLOSE_TIMEOUT_S)
            except TimeoutError:
                if direct is not None:
                    direct.abort()
            except Exception:  # noqa: BLE001 - already gone
                pass
        # Only now may the reader stop: had it ended the connection first, the transport
        # would have been closed without a close frame.
        self.close_code = code
        self._wake.set()

    # Writing (the hub's Subscriber protocol, and replies)

    def push(self, frame: Frame) -> None:
        """Queue a frame that must not be dropped (a reply, an ack, an error)."""
        if self._closing:
            return
        if self.delivery.control(frame):
            self._counters.sent(frame.op)
            self._kick()
        else:  # the client sends requests but does not read the answers
            self._closing = True
            asyncio.get_running_loop().create_task(self.close(CloseCode.POLICY, "not reading"))

    def deliver_message(self, channel: int, message_id: int, frame: Frame) -> None:
        if self.delivery.live(channel, message_id, frame):
            self._counters.deliveries += 1
            self._kick()

    def deliver_ephemeral(self, channel: int, frame: Frame) -> None:
        if self.delivery.ephemeral(channel, frame):
            self._counters.ephemeral += 1
            self._kick()

    def deliver_control(self, frame: Frame) -> None:
        self.push(frame)

    def deliver_presence(self, user: str, stamp: int, frame: Frame) -> None:
        if self.delivery.presence(user, stamp, frame):
            self._counters.presence_pushes += 1
            self._kick()

    def gap(self, channel: int) -> None:
        if self.delivery.gap(channel):
            self._kick()

    def kicked(self, channel: int, frame: Frame) -> bool:
        if self.delivery.kick(channel, frame):
            self._counters.sent(frame.op)
            self._kick()
            return True
        return False

    def replayed(self, channel: int, message_id: int, frame: Frame) -> None:
        if self.delivery.replayed(channel, message_id, frame):
            self._counters.replayed += 1
            self._kick()

    def finish(self, channel: int, *, after: int | None, upper: int | None, last: int | None, complete: bool) -> None:
        if self.delivery.finish(channel, after=after, upper=upper, last=last, complete=complete):
            self._kick()

    async def room(self) -> None:
        """Wait until the outbox has room (replays queue only that fast); returns at once if closing."""
        while not self._closing and not self.delivery.has_room():
            self._room.clear()
            self._room_wanted = True
            try:
                await self._room.wait()
            finally:
                self._room_wanted = False

    def _kick(self) -> None:
        """Frames were queued: get them written."""
        if self._flusher is None:
            self._wake.set()
        elif not self._dirty:
            self._dirty = True
            self._flusher.mark(self)

    def write_now(self) -> None:
        """Direct path: write what is queued in one go, unless the peer is not reading."""
        self._dirty = False
        direct, delivery = self._direct, self.delivery
        if direct is None or direct.paused:
            return  # writable() brings us back
        frames = delivery.drain(MAX_WRITE_BYTES)
        if frames:
            if not direct.write(frames[0].wire if len(frames) == 1 else b"".join([f.wire for f in frames])):
                self._closing = True
                self._room.set()
                self._resolve_flushed()
                return
            if delivery.outbox:
                self._kick()  # owed resyncs were queued, or more than one write's worth is left
            elif self._room_wanted and delivery.has_room():
                self._room.set()
        if self._flushed is not None and not delivery.frames:
            self._resolve_flushed()

    def _resolve_flushed(self) -> None:
        if self._flushed is not None and not self._flushed.done():
            self._flushed.set_result(None)

    async def _write_loop(self) -> None:
        """ASGI path: one writer task, one ``send_text`` per frame."""
        delivery, send = self.delivery, self._transport.send_text
        try:
            while True:
                frames = delivery.take()
                if not frames:
                    self._resolve_flushed()
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                for frame in frames:
                    await send(frame.text)
                    delivery.written(1, len(frame))
                    if not self._room.is_set() and delivery.has_room():
                        self._room.set()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the socket is gone; the reader sees it too
            self._closing = True
            self._room.set()
            self._resolve_flushed()

    # The socket's FrameSink (direct path)

    def frame_received(self, text: str | bytes) -> None:
        # Inline only when nothing is pending, so replies keep the order of their requests.
        if self._inbox or self._busy or not self._handle_inline(text):
            self._inbox.append(text)
            self._wake.set()

    def writable(self) -> None:
        self._kick()

    def lost(self) -> None:
        self._gone = True
        self._closing = True
        self._wake.set()
        self._room.set()
        self._resolve_flushed()

    def _handle_inline(self, text: str | bytes) -> bool:
        """Deal with a frame that needs no await (a heartbeat) right here. False: not one, the
        reader must take it. Only frames that look like a heartbeat are tried, so anything else
        is still parsed once."""
        direct = self._direct
        if self._inline is None or direct is None or not isinstance(text, str) or not text.startswith('{"op":"heartbeat"'):
            return False
        command = self._accept(text)
        if command is None:
            if self._guard.flooding:
                asyncio.get_running_loop().create_task(self._close_abusive(CloseCode.POLICY, "flooding"))
            direct.handled()  # refused or invalid: already answered
        elif self._inline(self, command):
            direct.handled()
        else:
            self._inbox.append(command)  # it parsed as another op after all: the reader runs it
            self._wake.set()
        return True

    # Reading

    async def receive(self, raw: str | bytes) -> None:
        """Handle one client frame. Errors become error frames; the socket stays open
        unless the client is abusive."""
        command = self._accept(raw)
        if command is None:
            if self._guard.flooding:
                await self._close_abusive(CloseCode.POLICY, "flooding")
            return
        await self._dispatch(command)

    async def _dispatch(self, command: Command) -> None:
        try:
            await self._handler(self, command)
        except Exception as exc:
            error = translate(exc)
            if isinstance(error, Internal) and not isinstance(exc, ChatError):
                log.exception("unexpected error handling a frame from %s", self.user)
            if error.frame_id is None:
                error.answering(command.id)
            self._refuse(error)
            if isinstance(error, TooLarge) and self._guard.too_large():
                await self._close_abusive(CloseCode.TOO_BIG, "repeated oversize messages")

    def _accept(self, raw: str | bytes) -> Command | None:
        """The rate limit, then parsing: a command, or None once the refusal is answered."""
        wait_s = self._guard.admit(time.monotonic())
        if wait_s:
            self._counters.unparsed += 1
            if not self._guard.flooding:
                refusal = RateLimited("slow down", retry_after_ms=max(1, int(wait_s * 1000) + 1))
                self._refuse(refusal.answering(protocol.peek_frame_id(raw)))
            return None
        try:
            command = protocol.parse_frame(raw, max_message_chars=self._max_message_chars)
        except ChatError as error:
            self._counters.unparsed += 1
            self._refuse(error)
            if isinstance(error, TooLarge) and self._guard.too_large():
                asyncio.get_running_loop().create_task(self._close_abusive(CloseCode.TOO_BIG, "repeated oversize messages"))
            return None
        self._counters.received(type(command))
        return command

    def _refuse(self, error: ChatError) -> None:
        self._counters.refused(error.code)
        self.push(protocol.error_frame(error))

    async def _close_abusive(self, code: CloseCode, reason: str) -> None:
        await self.flush(ABUSE_FLUSH_S)  # the client gets the replies and errors it earned
        await self.close(code, reason)
