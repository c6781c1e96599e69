"""One client socket's I/O: the reader, the writer, and the socket's limits.

What the socket is sent is decided by its :class:`~chat.delivery.Delivery` (pure); what a
request does is decided by the handler it was given (``chat.handlers``). The session moves
bytes between them and the transport:

* **Reading.** Each frame passes the socket's :class:`~chat.ratelimit.FrameGuard` (rate limit,
  flood and oversize strikes), is parsed into a typed command and handed to the handler, one at
  a time in arrival order. Errors become ``error`` frames answering the request's ``id``; only
  an abusive client is closed.
* **Writing.** One writer task drains the outbox, so a slow reader only ever slows itself.
  Live frames arrive from the hub as plain method calls (the :class:`~chat.hub.Subscriber`
  protocol): they are queued, or dropped for their channel with a ``resync`` owed, and the
  writer is woken; no task is created per message.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from chat import protocol
from chat.commands import Command
from chat.delivery import Delivery
from chat.errors import ChatError, CloseCode, Internal, RateLimited, TooLarge
from chat.models import Principal
from chat.protocol import Frame
from chat.ratelimit import FrameGuard

log = logging.getLogger(__name__)

# Before an abusive client is closed, its queued replies are written for at most this long.
ABUSE_FLUSH_S = 1.0

Handler = Callable[["Session", Command], Awaitable[None]]


class Transport(Protocol):
    """What a session needs from its socket (Starlette's WebSocket in production)."""

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
    """One connected client (one device): implements the hub's ``Subscriber``."""

    def __init__(self, transport: Transport, principal: Principal, *, limits: SessionLimits, handler: Handler) -> None:
        self.principal = principal
        self.session_id = uuid.uuid4().hex[:16]
        self.delivery = Delivery(max_frames=limits.queue_frames, max_bytes=limits.queue_bytes, resync_frame=protocol.resync)
        # Set when the socket is closed by us (the code sent), so the reader stops.
        self.close_code: int | None = None
        self._transport = transport
        self._handler = handler
        self._max_message_chars = limits.max_message_chars
        self._guard = FrameGuard(
            rate=limits.rate_per_s,
            burst=limits.rate_burst,
            flood_strikes=limits.flood_strikes,
            oversize_strikes=limits.oversize_strikes,
            now=time.monotonic(),
        )
        self._wake = asyncio.Event()  # the writer has something to write (or should stop)
        self._room = asyncio.Event()  # the outbox is below its bounds again (replays wait for it)
        # Created only by flush() (draining, abuse): resolved by the writer once the outbox is empty.
        self._flushed: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"<Session {self.session_id} user={self.user}>"

    @property
    def user(self) -> str:
        return self.principal.user

    # Lifecycle

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.session_id}")

    async def run(self) -> None:
        """Read and handle frames until the client goes or the session is closed."""
        receive = self._transport.receive
        while self.close_code is None:
            raw = await receive()
            if raw is None:
                return
            await self.receive(raw)

    def stop(self) -> None:
        """The socket is gone: stop writing (whatever is still queued is dropped)."""
        self._closing = True
        self._wake.set()
        self._room.set()
        if self._writer is not None:
            self._writer.cancel()

    async def flush(self, timeout_s: float) -> None:
        """Wait (bounded) until everything queued is written; used when draining."""
        if not self.delivery.frames or self._writer is None or self._writer.done():
            return
        if self._flushed is None or self._flushed.done():
            self._flushed = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._flushed), timeout_s)
        except TimeoutError:
            pass

    async def close(self, code: CloseCode, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code = code
        self._closing = True
        self._room.set()
        try:
            await self._transport.close(code, reason)
        except Exception:  # noqa: BLE001 - already gone
            pass

    # Writing (the hub's Subscriber protocol, and replies)

    def push(self, frame: Frame) -> None:
        """Queue a frame that must not be dropped (a reply, an ack, an error)."""
        if self._closing:
            return
        if self.delivery.control(frame):
            self._wake.set()
        else:  # the client sends requests but does not read the answers
            self._closing = True
            asyncio.get_running_loop().create_task(self.close(CloseCode.POLICY, "not reading"))

    def deliver_message(self, channel: int, message_id: int, frame: Frame) -> None:
        if self.delivery.live(channel, message_id, frame):
            self._wake.set()

    def deliver_ephemeral(self, channel: int, frame: Frame) -> None:
        if self.delivery.ephemeral(channel, frame):
            self._wake.set()

    def deliver_control(self, frame: Frame) -> None:
        self.push(frame)

    def gap(self, channel: int) -> None:
        if self.delivery.gap(channel):
            self._wake.set()

    def kicked(self, channel: int, frame: Frame) -> bool:
        if self.delivery.kick(channel, frame):
            self._wake.set()
            return True
        return False

    def replayed(self, channel: int, message_id: int, frame: Frame) -> None:
        if self.delivery.replayed(channel, message_id, frame):
            self._wake.set()

    def finish(self, channel: int, *, after: int | None, upper: int | None, last: int | None, complete: bool) -> None:
        if self.delivery.finish(channel, after=after, upper=upper, last=last, complete=complete):
            self._wake.set()

    async def room(self) -> None:
        """Wait until the outbox has room (replays queue only that fast); returns at once if closing."""
        while not self._closing and not self.delivery.has_room():
            self._room.clear()
            await self._room.wait()

    async def _write_loop(self) -> None:
        delivery, send = self.delivery, self._transport.send_text
        try:
            while True:
                frames = delivery.take()
                if not frames:
                    if self._flushed is not None and not self._flushed.done():
                        self._flushed.set_result(None)
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
            if self._flushed is not None and not self._flushed.done():
                self._flushed.set_result(None)

    # Reading

    async def receive(self, raw: str | bytes) -> None:
        """Handle one client frame. Errors become error frames; the socket stays open
        unless the client is abusive."""
        wait_s = self._guard.admit(time.monotonic())
        if wait_s:
            if self._guard.flooding:
                await self._close_abusive(CloseCode.POLICY, "flooding")
                return
            refusal = RateLimited("slow down", retry_after_ms=max(1, int(wait_s * 1000) + 1))
            self.push(protocol.error_frame(refusal.answering(protocol.peek_frame_id(raw))))
            return
        command: Command | None = None
        try:
            command = protocol.parse_frame(raw, max_message_chars=self._max_message_chars)
            await self._handler(self, command)
        except ChatError as error:
            if error.frame_id is None and command is not None:
                error.answering(command.id)
            self.push(protocol.error_frame(error))
            if isinstance(error, TooLarge) and self._guard.too_large():
                await self._close_abusive(CloseCode.TOO_BIG, "repeated oversize messages")
        except Exception:
            log.exception("unexpected error handling a frame from %s", self.user)
            self.push(protocol.error_frame(Internal("internal error").answering(None if command is None else command.id)))

    async def _close_abusive(self, code: CloseCode, reason: str) -> None:
        await self.flush(ABUSE_FLUSH_S)  # the client gets the replies and errors it earned
        await self.close(code, reason)
