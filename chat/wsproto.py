"""uvicorn's sans-I/O WebSocket protocol, plus a direct path between the socket and its Session.

Through ASGI every frame costs a queue hand-off, a task wake-up and a re-framing per recipient:
the fan-out to a room paid that once per socket per message. This subclass keeps uvicorn's
handshake, parsing, pings and closing, and adds, for an accepted socket whose app attached a
:class:`FrameSink`:

* **writes**: :meth:`write` puts bytes that are already WebSocket frames (encoded once per
  fan-out, see :attr:`chat.protocol.Frame.wire`) straight on the transport; a paused transport
  (peer not reading) tells the sink when it can write again (:meth:`FrameSink.writable`);
* **reads**: each complete text frame goes to :meth:`FrameSink.frame_received` from
  ``data_received`` itself — a heartbeat is answered there with no task wake-up; reading pauses
  while the sink holds :data:`MAX_QUEUED` unhandled frames;
* **dead peers**: a ping that gets no pong in time *aborts* the transport (a close would wait
  for a write buffer that a dead peer never drains, holding the socket and its buffers);
* **memory**: the handshake's request and response objects are dropped once accepted.

It relies on these internals of ``uvicorn.protocols.websockets.websockets_sansio_impl`` (pinned
in pyproject.toml; ``tests/unit/test_direct_path.py`` fails if they move): the attributes
``transport``, ``conn``, ``scope``, ``frames``, ``curr_msg_data_type``, ``close_sent``,
``disconnected``, ``handshake_complete``, ``request``, ``response``, ``logger`` and the
methods ``handle_connect``, ``send_receive_event_to_app``, ``pause_writing``, ``resume_writing``,
``keepalive_timeout``, ``connection_lost``, ``handle_close``, ``send``, and ``run_asgi`` (copied,
with one change: see :meth:`DirectSocket.run_asgi`). Any other transport (another server,
Starlette's TestClient) falls back to plain ASGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any, Protocol

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from chat.flag import Flag

log = logging.getLogger(__name__)

#: The ASGI scope extension under which an accepted socket offers its direct path.
EXTENSION = "chat.direct"
#: Frames a sink may hold unhandled before the socket stops reading (backpressure).
MAX_QUEUED = 32
_UTF8_LOG_INTERVAL_S = 60.0


class FrameSink(Protocol):
    """What the socket calls on the app's side. Every call runs on the loop and must not block."""

    def frame_received(self, data: str | bytes) -> None:
        """A complete frame from the client: ``str`` for a text frame, ``bytes`` for a binary one."""

    def writable(self) -> None:
        """The transport drained below its low-water mark: write what is queued."""

    def lost(self) -> None:
        """The connection is gone."""


class DirectSocket(WebSocketsSansIOProtocol):
    """The protocol class given to uvicorn (``ws=``) by ``chat.server``."""

    _utf8_logged_at = 0.0  # class-wide: one log line per interval, however many clients

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set by the app once it accepted the socket and wants frames directly.
        self.sink: FrameSink | None = None
        # Frames handed to the sink and not yet handled (for read backpressure).
        self.queued = 0
        # The code of the client's close frame (None: none came, the connection just dropped).
        self.peer_code: int | None = None
        # The transport's buffer is above its high-water mark (a plain flag: checked per write).
        self.paused = False

    # The app's side

    def attach(self, sink: FrameSink) -> None:
        """Route this socket's frames to ``sink`` from now on (after the ASGI accept).

        Frames the client sent right behind its handshake were queued for ASGI before the sink
        existed: they go to the sink first, in order. The ASGI queue (four deques: ~3 KiB per
        socket) then gives way to a slim one that only keeps what uvicorn still puts in it."""
        self.sink = sink
        # The handshake is over: its request (headers included) and response are not needed.
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
        early, slim = [], _SlimQueue()
        while not self.queue.empty():
            event = self.queue.get_nowait()
            if event["type"] == "websocket.receive":
                early.append(event)
            else:
                slim.put_nowait(event)
        self.queue = slim  # type: ignore[assignment]
        # Likewise its write gate: an Event with a deque, where one waiter (a close) is all there is.
        writable = Flag()
        if self.writable.is_set():
            writable.set()
        self.writable = writable  # type: ignore[assignment]
        for event in early:
            text = event.get("text")
            self.queued += 1
            sink.frame_received(text if text is not None else event.get("bytes") or b"")

    def write(self, data: bytes) -> bool:
        """Write complete frames now; False if the socket is closing or gone (nothing written)."""
        if self.close_sent or self.disconnected:
            return False
        self.transport.write(data)
        return True

    def handled(self) -> None:
        """The sink finished one frame it was given: resume reading if it had paused."""
        self.queued -= 1
        if self.read_paused and self.queued < MAX_QUEUED // 2 and not self.close_sent:
            self.read_paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection at once, whatever is buffered (for peers that stopped reading).

        asyncio's ``abort`` only closes the socket: the kernel would keep the connection (and
        up to megabytes of unsent data) while it retries a peer that never reads. A zero
        linger makes the close a reset, which frees both at once."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    # uvicorn's side

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if not self.close_sent:
            self.scope["extensions"][EXTENSION] = {"socket": self}

    def send_receive_event_to_app(self) -> None:
        sink = self.sink
        if sink is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        frame: str | bytes = bytes(data)
        if self.curr_msg_data_type == "text":
            try:
                frame = data.decode()
            except UnicodeDecodeError:
                self._invalid_utf8()
                return
        self.queued += 1
        if self.queued >= MAX_QUEUED and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
        sink.frame_received(frame)

    async def run_asgi(self) -> None:
        """uvicorn's, except that an app that attached a sink and returned leaves the socket open:
        the sink (the session, with a reader task of its own) owns it from then on. An idle
        socket so holds no ASGI task and no stack of Starlette frames (~4 KiB)."""
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self.close_timer is None and (self.sink is None or self.close_sent or self.disconnected):
            self.transport.close()

    def handle_close(self, event: Any) -> None:
        if self.conn.close_rcvd is not None:
            self.peer_code = self.conn.close_rcvd.code
        super().handle_close(event)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.paused = True

    def resume_writing(self) -> None:
        super().resume_writing()
        self.paused = False
        if self.sink is not None:
            self.sink.writable()

    def keepalive_timeout(self) -> None:
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        self.logger.debug("WebSocket keepalive ping timeout: aborting the connection")
        self.close_sent = True
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.lost()

    def _invalid_utf8(self) -> None:
        now = time.monotonic()
        if now - DirectSocket._utf8_logged_at > _UTF8_LOG_INTERVAL_S:
            DirectSocket._utf8_logged_at = now
            log.warning("a client sent a text frame that is not UTF-8; closing it with 1007 (logged once a minute)")
        self.conn.send_close(1007, "invalid UTF-8")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 1007, "reason": "invalid UTF-8"})
        self.transport.close()


class _SlimQueue:
    """What uvicorn's protocol needs of its ASGI queue once the direct path carries the frames:
    it still puts events (a disconnect) in it, and an ASGI ``receive`` may still read them."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._items.pop(0)


def direct_socket(scope: Mapping[str, Any]) -> DirectSocket | None:
    """The direct path of an accepted socket, if its server offers one."""
    offered = scope.get("extensions", {}).get(EXTENSION)
    return None if offered is None else offered.get("socket")

