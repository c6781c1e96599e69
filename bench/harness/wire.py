"""A lean RFC 6455 client for load generation: frame codec and an ``asyncio.Protocol`` socket.

Why not the ``websockets`` client: at tens of thousands of frames per second the load generator
must cost far less CPU per frame than the server, or it measures itself. This client parses every
frame one read returned in one pass over a ``bytearray``, decodes nothing it is not asked to, and
stamps all frames of one read with one clock reading. It speaks just enough of the protocol for a
chat node: masked client frames (websockets' C ``apply_mask``), pings answered, fragmented
messages reassembled; no extensions are offered (the node runs without per-message-deflate).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from bench.harness.node import Target

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

OP_CONT, OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x8, 0x9, 0xA
# asyncio reads up to 256 KiB per recv(): above glibc's 128 KiB mmap threshold, so every read
# would mmap, fault and munmap a fresh buffer (~10.7 µs instead of ~1.3 µs on this machine).
RECV_SIZE = 65536
FrameHandler = Callable[[bytes, float], None]


def frame_at(buf: bytes | bytearray, pos: int, n: int) -> tuple[int, int, int] | None:
    """The unmasked (server) frame starting at ``buf[pos]``: ``(first byte, payload start,
    payload end)``, or None while ``buf[:n]`` does not hold all of it yet."""
    if n - pos < 2:
        return None
    length = buf[pos + 1] & 0x7F
    head = 2
    if length == 126:
        if n - pos < 4:
            return None
        length, head = (buf[pos + 2] << 8) | buf[pos + 3], 4
    elif length == 127:
        if n - pos < 10:
            return None
        length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
    end = pos + head + length
    return None if end > n else (buf[pos], pos + head, end)


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One masked, final client frame."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = os.urandom(4)
    return header + mask + apply_mask(payload, mask)


def json_frame(obj: Any) -> bytes:
    """A text frame holding ``obj`` as JSON."""
    return encode_frame(OP_TEXT, orjson.dumps(obj))


def subscribe_frame(channels: Sequence[str]) -> bytes:
    """The ``subscribe`` request for ``channels``."""
    return json_frame({"op": "subscribe", "id": "sub", "channels": list(channels)})


# Encoded once, so one mask serves every heartbeat: the node does not care, the load generator stays cheap.
HEARTBEAT = json_frame({"op": "heartbeat"})


def handshake_request(host: str, port: int, path: str) -> bytes:
    """The HTTP upgrade request of a WebSocket handshake (the token travels in ``path``)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def handshake_status(head: bytes) -> str | None:
    """None when the response head is ``101 Switching Protocols``, else its status line."""
    status = head.split(b"\r\n", 1)[0]
    return None if b" 101 " in status else status.decode("latin-1")


class Peer(asyncio.Protocol):
    """One client socket. Once upgraded it subscribes to ``channels``; ``ready`` resolves when the
    node's ``hello`` and a ``subscribed`` per channel arrived (an ``error`` first fails it). Every
    text payload, those included, goes to ``on_frame(payload, now)``."""

    def __init__(self, host: str, port: int, path: str, on_frame: FrameHandler | None = None, *, channels: Sequence[str] = ()) -> None:
        loop = asyncio.get_running_loop()
        self.request = handshake_request(host, port, path)
        self.on_frame = on_frame
        self.channels = channels
        self.want_subscribed = len(channels)
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._hello = False
        self._upgraded = False
        self._buf = bytearray()
        self._fragments: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if hasattr(transport, "max_size"):
            transport.max_size = RECV_SIZE
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            refused = handshake_status(bytes(buf[:end]))
            del buf[: end + 4]
            if refused:
                self._fail(ConnectionError(f"handshake refused: {refused}"))
                return
            self._upgraded = True
            if self.channels:
                self.send(subscribe_frame(self.channels))
        n, pos, now = len(buf), 0, time.monotonic()
        while (frame := frame_at(buf, pos, n)) is not None:
            b0, start, pos = frame
            self._frame(b0, bytes(buf[start:pos]), now)
        del buf[:pos]

    def _frame(self, b0: int, payload: bytes, now: float) -> None:
        opcode = b0 & 0x0F
        if opcode == OP_TEXT and b0 & 0x80:
            self._text(payload, now)
        elif opcode == OP_TEXT:
            self._fragments = [payload]
        elif opcode == OP_CONT and self._fragments is not None:
            self._fragments.append(payload)
            if b0 & 0x80:
                whole, self._fragments = b"".join(self._fragments), None
                self._text(whole, now)
        elif opcode == OP_PING:
            self.send(encode_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self.close(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1000)  # echo the node's code

    def _text(self, payload: bytes, now: float) -> None:
        if not self.ready.done():
            if payload.startswith(b'{"op":"hello"'):
                self._hello = True
            elif payload.startswith(b'{"op":"subscribed"'):
                self.want_subscribed -= 1
            elif payload.startswith(b'{"op":"error"'):
                self._fail(RuntimeError(payload.decode()))
            if self._hello and self.want_subscribed <= 0 and not self.ready.done():
                self.ready.set_result(None)
        if self.on_frame is not None:
            self.on_frame(payload, now)

    def _fail(self, exc: BaseException) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("closed before ready"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, frame: bytes) -> None:
        """Write an encoded frame (``encode_frame``/``json_frame``) unless the socket is closing."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def close(self, code: int = 1000) -> None:
        self.send(encode_frame(OP_CLOSE, struct.pack("!H", code)))
        if self.transport is not None:
            self.transport.close()


async def connect(
    host: str,
    port: int,
    path: str,
    on_frame: FrameHandler | None = None,
    *,
    channels: Sequence[str] = (),
    source: str | None = None,
    timeout_s: float = 30.0,
) -> Peer:
    """Open a socket (optionally from a loopback source address), subscribe to ``channels`` and
    wait (bounded) for ``hello`` and every ``subscribed``."""
    loop = asyncio.get_running_loop()
    local = (source, 0) if source else None
    _, peer = await asyncio.wait_for(
        loop.create_connection(lambda: Peer(host, port, path, on_frame, channels=channels), host, port, local_addr=local), timeout_s
    )
    await asyncio.wait_for(asyncio.shield(peer.ready), timeout_s)
    return peer


async def open_peer(target: Target, user: str, on_frame: FrameHandler | None = None, *, channels: Sequence[str] = ()) -> Peer:
    """:func:`connect` to ``target`` as ``user``."""
    return await connect(target.host, target.port, target.ws_path_for(user), on_frame, channels=channels)


async def close_all(peers: Sequence[Peer], timeout_s: float = 5.0) -> None:
    """Close sockets and wait (bounded) until the node has seen them go."""
    for p in peers:
        p.close()
    if peers:
        await asyncio.wait([p.closed for p in peers], timeout=timeout_s)
