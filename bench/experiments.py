"""Server-side experiments: measure a proposed change to chat/ without editing chat/.

Applied by ``bench.serve_variant --patch NAME`` (benchmarks only; nothing here runs in
production). Each patch is a prototype of a suggestion in BENCHMARKS.md, written just
well enough to measure its gain under the benchmarks' traffic.

``rawsend``
    ``StarletteTransport.send_text`` calls uvicorn's ASGI ``send`` directly instead of
    Starlette's ``WebSocket.send`` (which adds a state check and the exception-handler
    ``sender`` wrapper per frame). Needs the protocol subclass below to reach the raw send.

``fastpath``
    Outbound frames bypass ASGI: a ``WebSocketsSansIOProtocol`` subclass (uvicorn accepts a
    protocol class as ``Config.ws``) exposes itself to the app in ``scope["extensions"]``,
    and the session writes pre-framed bytes to the asyncio transport. Server frames are
    unmasked and uncompressed (deflate is off), so a text frame is ``0x81 + length +
    UTF-8`` and identical for every recipient: it is framed once per message (an identity
    cache on the shared ``str``). ``Session.deliver_message`` writes at once when the
    socket has nothing queued, nothing in flight and the transport is not paused (no task
    wake-up at all); otherwise it queues as before, and the writer task then writes
    *everything* queued with one ``transport.write`` (one syscall for a backlog).
    Flow control is kept: when uvicorn's ``writable`` is clear the writer waits on it.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

EXT = "chat.raw_protocol"


class ExposingProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus a handle on itself in the ASGI scope."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][EXT] = {"protocol": self}


_last: list[Any] = [None, b""]


def frame_bytes(frame: str) -> bytes:
    """``frame`` as one final, unmasked text frame; cached for the ``str`` object just seen."""
    if _last[0] is frame:
        return _last[1]
    data = frame.encode()
    n = len(data)
    if n < 126:
        out = bytes((0x81, n)) + data
    elif n < 65536:
        out = struct.pack("!BBH", 0x81, 126, n) + data
    else:
        out = struct.pack("!BBQ", 0x81, 127, n) + data
    _last[0] = frame
    _last[1] = out
    return out


def _protocol_of(websocket: Any) -> WebSocketsSansIOProtocol | None:
    ext = websocket.scope.get("extensions", {}).get(EXT)
    return ext["protocol"] if ext else None


def apply_rawsend(config: Any) -> None:
    from chat import ws

    config.ws = ExposingProtocol

    class RawSendTransport(ws.StarletteTransport):
        __slots__ = ("_send",)

        def __init__(self, websocket: Any) -> None:
            super().__init__(websocket)
            proto = _protocol_of(websocket)
            self._send = proto.send if proto is not None else websocket.send

        async def send_text(self, data: str) -> None:
            await self._send({"type": "websocket.send", "text": data})

    ws.StarletteTransport = RawSendTransport  # type: ignore[misc]


def apply_fastpath(config: Any) -> None:
    from chat import ws
    from chat.session import Session

    config.ws = ExposingProtocol
    OPEN = State.OPEN

    class FastTransport(ws.StarletteTransport):
        __slots__ = ("proto",)

        def __init__(self, websocket: Any) -> None:
            super().__init__(websocket)
            self.proto = _protocol_of(websocket)

    ws.StarletteTransport = FastTransport  # type: ignore[misc]

    def _ready(proto: WebSocketsSansIOProtocol) -> bool:
        return proto.writable.is_set() and not proto.close_sent and proto.conn.state is OPEN

    orig_deliver = Session.deliver_message

    def deliver_message(self: Session, channel_id: int, message_id: int, frame: str) -> None:
        if not self._outbox and not getattr(self, "_in_flight", False):
            stream = self.streams.get(channel_id)
            proto = getattr(self.transport, "proto", None)
            if stream is not None and not self._closing and not stream.replaying and not stream.gapped and proto is not None and _ready(proto):
                proto.transport.write(frame_bytes(frame))
                stream.sent_live(message_id)
                return
        orig_deliver(self, channel_id, message_id, frame)

    async def _write_loop(self: Session) -> None:
        outbox = self._outbox
        proto = getattr(self.transport, "proto", None)
        send = self.transport.send_text
        self._in_flight = False
        try:
            while True:
                while not outbox:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                if proto is not None and proto.conn.state is OPEN and not proto.close_sent:
                    if not proto.writable.is_set():
                        self._in_flight = True
                        await proto.writable.wait()
                        self._in_flight = False
                        continue
                    frames = list(outbox)
                    outbox.clear()
                    proto.transport.write(b"".join([frame_bytes(f) for f in frames]) if len(frames) > 1 else frame_bytes(frames[0]))
                else:
                    self._in_flight = True
                    await send(outbox.popleft())
                    self._in_flight = False
                if len(outbox) <= self._limit // 2:
                    if not self._space.is_set():
                        self._space.set()
                    if self._owed:
                        self._pay_resyncs()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            self._closing = True
            self._space.set()

    Session.deliver_message = deliver_message  # type: ignore[method-assign]
    Session._write_loop = _write_loop  # type: ignore[method-assign]


def apply_tracemalloc(config: Any) -> None:
    """Trace Python allocations; SIGUSR2 writes a snapshot to ``$BENCH_TRACEMALLOC_OUT`` and
    later SIGUSR2s write ``<out>.2``, … (compare two with ``bench.memory --tracemalloc``)."""
    import os
    import signal
    import tracemalloc

    tracemalloc.start(1)
    out = os.environ.get("BENCH_TRACEMALLOC_OUT", "tracemalloc.snap")
    counter = [0]

    def dump(signum: int, frame: Any) -> None:
        counter[0] += 1
        tracemalloc.take_snapshot().dump(out if counter[0] == 1 else f"{out}.{counter[0]}")

    signal.signal(signal.SIGUSR2, dump)


PATCHES = {"rawsend": apply_rawsend, "fastpath": apply_fastpath, "tracemalloc": apply_tracemalloc}
