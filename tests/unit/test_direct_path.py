"""A socket on the direct path (chat.session writing through chat.wsproto's DirectSocket):
frames queued in one loop turn leave in one write; once the transport has paused writing (the
peer is not reading) nothing more is written to it, the outbox holds frames only up to its
bound and then owes a resync; when the transport resumes, what was held leaves in order,
then the resync, and live delivery goes on. And the uvicorn internals DirectSocket builds on are still where it expects."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, cast

import orjson
import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from chat import protocol
from chat.commands import Command
from chat.flusher import Flusher
from chat.models import Principal
from chat.protocol import Frame
from chat.session import Session, SessionLimits
from chat.wsproto import DirectSocket

CH = 7
MAX_FRAMES = 8


class PausableSocket:
    """DirectSocket as the session sees it, over a transport that can pause writing."""

    def __init__(self) -> None:
        self.paused = False
        self.writes: list[bytes] = []
        self.peer_code: int | None = None
        self.sink: Session | None = None

    def attach(self, sink: Session) -> None:
        self.sink = sink

    def write(self, data: bytes) -> bool:
        assert not self.paused, "written to a transport that paused writing"
        self.writes.append(data)
        return True

    def handled(self) -> None:
        pass

    def abort(self) -> None:
        pass

    # The transport's calls, as DirectSocket forwards them.
    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        assert self.sink is not None
        self.sink.writable()

    def frames(self, start: int = 0) -> list[dict[str, Any]]:
        """What was written from write ``start`` on, decoded frame by frame."""
        out = []
        for write in self.writes[start:]:
            data = write
            while data:
                assert data[0] == 0x81  # FIN + text: one whole unmasked frame after another
                length, offset = data[1], 2
                if length == 126:
                    length, offset = int.from_bytes(data[2:4], "big"), 4
                elif length == 127:
                    length, offset = int.from_bytes(data[2:10], "big"), 10
                out.append(orjson.loads(data[offset : offset + length]))
                data = data[offset + length :]
        return out


def msg(message_id: int) -> Frame:
    return protocol.frame("message", {"message": {"id": str(message_id), "channel": str(CH)}})


async def _handler(session: Session, command: Command) -> None:
    raise AssertionError("no client frames in these tests")


def session_on(sock: PausableSocket) -> Session:
    limits = SessionLimits(
        max_message_chars=1000,
        queue_frames=MAX_FRAMES,
        queue_bytes=1 << 20,
        rate_per_s=100.0,
        rate_burst=100,
        flood_strikes=3,
        oversize_strikes=3,
    )
    session = Session(
        cast(Any, None),  # the ASGI transport: unused on the direct path
        Principal("bob"),
        limits=limits,
        handler=_handler,
        direct=cast(DirectSocket, sock),
        flusher=Flusher(window_s=0.0),
    )
    session.start()
    assert session.delivery.open(CH)
    session.finish(CH, after=None, upper=None, last=None, complete=True)
    return session


async def turn() -> None:
    """Let the loop run the flusher's callback (scheduled with call_soon)."""
    for _ in range(3):
        await asyncio.sleep(0)


def ids(frames: list[dict[str, Any]]) -> list[int | str]:
    return [int(f["message"]["id"]) if f["op"] == "message" else f["op"] for f in frames]


async def test_frames_of_one_loop_turn_leave_in_one_write() -> None:
    sock = PausableSocket()
    session = session_on(sock)
    for i in (1, 2, 3):
        session.deliver_message(CH, i, msg(i))
    await turn()
    assert len(sock.writes) == 1
    assert ids(sock.frames()) == [1, 2, 3]


async def test_a_paused_transport_gets_nothing_and_the_outbox_stays_bounded() -> None:
    sock = PausableSocket()
    session = session_on(sock)
    session.deliver_message(CH, 1, msg(1))
    await turn()
    sock.pause_writing()
    for i in range(2, 1002):  # a busy room while the peer reads nothing
        session.deliver_message(CH, i, msg(i))
        if i % 50 == 0:
            await turn()
    await turn()
    assert len(sock.writes) == 1, "written while the transport was paused"
    assert session.delivery.frames <= MAX_FRAMES  # held: bounded, not 1,000 frames
    written = len(sock.writes)
    sock.resume_writing()
    await turn()
    # What was held leaves in order, then the resync that replaces everything dropped.
    assert ids(sock.frames(written)) == [*range(2, 2 + MAX_FRAMES), "resync"]
    # After the resync, live delivery resumes (the client fetches the gap from the store).
    session.deliver_message(CH, 2000, msg(2000))
    await turn()
    assert ids(sock.frames(written))[-2:] == ["resync", 2000]


@pytest.mark.parametrize(
    "name",
    [
        "transport", "conn", "scope", "frames", "curr_msg_data_type", "close_sent", "disconnected",
        "handshake_complete", "request", "response", "logger", "read_paused", "writable", "queue",
    ],
)  # fmt: skip
def test_uvicorn_still_keeps_the_state_direct_socket_uses(name: str) -> None:
    """uvicorn is pinned in pyproject.toml; an upgrade that moves these fails here, not in production."""
    source = inspect.getsource(WebSocketsSansIOProtocol)
    assert f"self.{name} =" in source or f"self.{name}:" in source, name


@pytest.mark.parametrize(
    "name",
    [
        "handle_connect", "send_receive_event_to_app", "pause_writing", "resume_writing", "keepalive_timeout",
        "connection_lost", "handle_close", "send", "run_asgi", "data_received",
    ],
)  # fmt: skip
def test_uvicorn_still_has_the_methods_direct_socket_overrides_or_calls(name: str) -> None:
    assert callable(getattr(WebSocketsSansIOProtocol, name, None)), name
    assert issubclass(DirectSocket, WebSocketsSansIOProtocol)
