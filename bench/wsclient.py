"""A lean WebSocket client on ``asyncio.Protocol`` for load generation.

Why not the ``websockets`` client: at tens of thousands of frames per second the load
generator must cost far less CPU per frame than the server, or it measures itself. This
client parses every frame that one ``read()`` returned in one pass over a ``bytearray``,
decodes nothing it is not asked to, and stamps all frames of one read with one clock
reading. It speaks just enough RFC 6455 for our server: client frames are masked (the C
``apply_mask`` from ``websockets.speedups``), pings are answered, fragmented messages are
reassembled, and ``permessage-deflate`` can be offered (responses are then inflated) so the
memory benchmark can measure its per-socket cost.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
import zlib
from collections.abc import Callable

try:
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - pure-Python fallback

    def _apply_mask(data: bytes, mask: bytes) -> bytes:
        n = len(data)
        m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        return (int.from_bytes(data, "big") ^ m).to_bytes(n, "big")


OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_monotonic = time.monotonic


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
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        head = 4
    elif length == 127:
        if n - pos < 10:
            return None
        length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
        head = 10
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
    return header + mask + _apply_mask(payload, mask)


class HandshakeError(Exception):
    pass


class RawWs(asyncio.Protocol):
    """One client socket. Subclass and override :meth:`on_text` (and maybe :meth:`on_open`)."""

    def __init__(self, host: str, port: int, path: str, *, deflate: bool = False, extra_headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.offer_deflate = deflate
        self.extra_headers = extra_headers
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._buf = bytearray()
        self._upgraded = False
        self._inflate: zlib._Decompress | None = None  # type: ignore[name-defined]
        self._fragments: list[bytes] | None = None
        self._frag_compressed = False
        self.close_code: int | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # asyncio reads up to 256 KiB per recv(): above glibc's mmap threshold, so each read
        # would mmap, fault and munmap a fresh buffer (~10 us instead of ~1.3 us here).
        if hasattr(transport, "max_size"):
            transport.max_size = 65536  # type: ignore[attr-defined]
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if self.offer_deflate:
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
        lines.extend(f"{k}: {v}" for k, v in self.extra_headers)
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            status = head.split("\r\n", 1)[0]
            if " 101 " not in status:
                if not self.opened.done():
                    self.opened.set_exception(HandshakeError(status))
                assert self.transport is not None
                self.transport.close()
                return
            self._upgraded = True
            if "permessage-deflate" in head.lower():
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            if not self.opened.done():
                self.opened.set_result(None)
            self.on_open()
        self._parse(buf)

    def _parse(self, buf: bytearray) -> None:
        n = len(buf)
        pos = 0
        now = _monotonic()
        while (frame := frame_at(buf, pos, n)) is not None:
            b0, start, end = frame
            payload = bytes(buf[start:end])
            pos = end
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode == OP_TEXT or opcode == OP_BINARY:
                compressed = bool(b0 & 0x40)
                if not fin:
                    self._fragments = [payload]
                    self._frag_compressed = compressed
                    continue
                if compressed:
                    payload = self._inflate_msg(payload)
                self.on_text(payload, now)
            elif opcode == OP_CONT and self._fragments is not None:
                self._fragments.append(payload)
                if fin:
                    payload = b"".join(self._fragments)
                    self._fragments = None
                    if self._frag_compressed:
                        payload = self._inflate_msg(payload)
                    self.on_text(payload, now)
            elif opcode == OP_PING:
                self._write(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                if self.transport is not None and not self.transport.is_closing():
                    self._write(OP_CLOSE, payload[:2])
                    self.transport.close()
        if pos:
            del buf[:pos]

    def _inflate_msg(self, payload: bytes) -> bytes:
        assert self._inflate is not None
        return self._inflate.decompress(payload + b"\x00\x00\xff\xff")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or HandshakeError("connection closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(self.close_code or 1006)
        self.on_close()

    # API

    def _write(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(opcode, payload))

    def send_text(self, data: str | bytes) -> None:
        self._write(OP_TEXT, data.encode() if isinstance(data, str) else data)

    def close(self, code: int = 1000) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._write(OP_CLOSE, struct.pack("!H", code))
            self.transport.close()

    # Hooks

    def on_open(self) -> None:
        pass

    def on_text(self, payload: bytes, now: float) -> None:
        pass

    def on_close(self) -> None:
        pass


async def connect(
    factory: Callable[[], RawWs],
    host: str,
    port: int,
    *,
    source: str | None = None,
    timeout: float = 15.0,
) -> RawWs:
    """Open a socket (optionally from a given loopback source address) and finish the handshake."""
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(factory, host, port, local_addr=(source, 0) if source else None), timeout
    )
    await asyncio.wait_for(asyncio.shield(proto.opened), timeout)
    return proto
