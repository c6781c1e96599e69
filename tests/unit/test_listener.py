"""Issue 12, item 6, in process: the uvicorn internals chat/listener.py and chat/fds.py rely on,
exercised through them (a uvicorn upgrade that changes one fails here, loudly), with a fake
transport and no sockets. tests/e2e/test_handshake_limits.py repeats it all for real."""

from __future__ import annotations

import asyncio
import errno
import importlib.metadata
import socket
import tomllib
from asyncio.trsock import TransportSocket
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from packaging.requirements import Requirement
from uvicorn.server import ServerState

from chat.fds import FdReserve
from chat.listener import MAX_HEAD_BYTES, GuardedHttpProtocol, GuardedWebSocketProtocol, http_protocol
from chat.startup import bind_listener

ROOT = Path(__file__).resolve().parents[2]


class FakeTransport(asyncio.Transport):
    """What uvicorn's protocols use of a transport, recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = asyncio.Event()
        self.aborted = False
        self.eof_written = False
        self.protocol: Any = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed.is_set()

    def close(self) -> None:
        self.closed.set()

    def abort(self) -> None:
        self.aborted = True
        self.closed.set()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Answers every HTTP request 200; accepts every WebSocket and keeps it until it goes."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def http_conn(timeout_s: float = 10.0) -> tuple[GuardedHttpProtocol, FakeTransport]:
    config = uvicorn.Config(app, ws=GuardedWebSocketProtocol, http=http_protocol(handshake_timeout_s=timeout_s), lifespan="off")
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})  # type: ignore[call-arg]
    assert isinstance(protocol, GuardedHttpProtocol)
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


def answer(transport: FakeTransport) -> tuple[int, str]:
    head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), orjson.loads(body)["error"]["code"]


def test_uvicorn_is_a_version_this_code_was_checked_against() -> None:
    """chat/listener.py subclasses uvicorn's protocol classes: pyproject pins the range."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = next(Requirement(d) for d in deps if d.startswith("uvicorn"))
    assert importlib.metadata.version("uvicorn") in pinned.specifier
    assert pinned.specifier.contains("0.54.0") and not pinned.specifier.contains("0.55.0")


async def test_a_long_url_stops_the_parser_and_is_answered_414() -> None:
    protocol, transport = http_conn()
    protocol.data_received(b"GET /v1/ws?token=" + b"a" * 9000)  # the URL alone, still incomplete
    assert answer(transport) == (414, "too_large") and transport.eof_written
    protocol.data_received(b"more of the same")  # lingering: dropped, not parsed
    assert transport.written.count(b"HTTP/1.1") == 1
    await asyncio.wait_for(transport.closed.wait(), 3)  # closed after the linger
    assert transport.aborted


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\nAuthorization: Bearer " + b"a" * 8200 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"b" * (MAX_HEAD_BYTES + 1), 431),  # never ends: counted per read
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
    ],
    ids=["long-header", "many-headers", "endless-header", "malformed"],
)
async def test_oversize_or_bad_heads_are_answered_in_the_protocol_body(head: bytes, status: int) -> None:
    protocol, transport = http_conn()
    protocol.data_received(head)
    assert answer(transport)[0] == status


async def test_the_timer_answers_a_partial_head_408_and_closes_a_silent_socket() -> None:
    partial, partial_transport = http_conn(timeout_s=0.05)
    partial.data_received(b"GET /healthz HTTP/1.1\r\nHo")
    _, silent_transport = http_conn(timeout_s=0.05)
    await asyncio.wait_for(partial_transport.closed.wait(), 3)
    await asyncio.wait_for(silent_transport.closed.wait(), 3)
    assert answer(partial_transport) == (408, "bad_request")
    assert silent_transport.written == b""


async def test_a_complete_head_disarms_the_timer_and_the_next_request_rearms_it() -> None:
    protocol, transport = http_conn(timeout_s=0.2)
    protocol.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.4)  # longer than the timeout: a served connection is not cut
    assert not transport.is_closing() and transport.written.startswith(b"HTTP/1.1 200")
    protocol.data_received(b"GET /healthz HTTP/1.1\r\n")  # a second request's head, never finished
    await asyncio.wait_for(transport.closed.wait(), 3)
    assert bytes(transport.written).count(b"HTTP/1.1 408") == 1


async def test_an_upgrade_hands_the_socket_to_the_websocket_protocol_without_the_timer() -> None:
    protocol, transport = http_conn(timeout_s=0.1)
    protocol.data_received(
        b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert isinstance(transport.protocol, GuardedWebSocketProtocol)
    await asyncio.sleep(0.3)
    assert transport.written.startswith(b"HTTP/1.1 101") and not transport.is_closing()
    transport.protocol.connection_lost(None)
    await asyncio.wait_for(transport.closed.wait(), 3)  # the app saw the disconnect and ended


async def test_the_websocket_protocol_writes_and_closes_what_its_parser_refuses() -> None:
    """uvicorn's sans-I/O protocol logs a 414/431 it never sends; ours sends it and closes."""
    config = uvicorn.Config(app, ws=GuardedWebSocketProtocol, lifespan="off")
    config.load()
    protocol = GuardedWebSocketProtocol(config=config, server_state=ServerState(), app_state={})
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(b"GET /v1/ws?token=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 414") and transport.is_closing()


def test_the_reserve_answers_a_waiting_connection_when_accept_fails_for_lack_of_fds() -> None:
    """The context asyncio's accept loop passes its exception handler on EMFILE (an OSError as
    ``exception``, the listener as a TransportSocket ``socket``) is what FdReserve acts on."""
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.create_connection(listener.getsockname()) as client:
        listener.setblocking(False)
        reserve = FdReserve([listener])
        try:
            emfile = OSError(errno.EMFILE, "Too many open files")
            context = {"message": "socket.accept() out of system resource", "exception": emfile, "socket": TransportSocket(listener)}
            assert reserve.handle(context) and reserve.shed == 1
            client.settimeout(3)
            assert client.recv(4096).startswith(b"HTTP/1.1 503 Service Unavailable")
            assert reserve.handle(context) and reserve.shed == 1  # nothing waiting: nothing answered
            assert not reserve.handle({**context, "exception": OSError(errno.ECONNRESET, "reset")})
            assert not reserve.handle({"message": "something else", "exception": RuntimeError()})
        finally:
            reserve.close()


async def test_connections_accepted_on_the_nodes_own_socket_get_tcp_nodelay() -> None:
    """The node binds its socket itself (chat/startup.py): asyncio sets TCP_NODELAY only on
    sockets whose proto is TCP, and without it every reply waited ~40 ms for a delayed ACK."""
    sock = bind_listener("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    nodelay: asyncio.Future[int] = loop.create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            nodelay.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    server = await loop.create_server(Probe, sock=sock)
    try:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        assert await asyncio.wait_for(nodelay, 3) != 0
        writer.close()
    finally:
        server.close()
