"""The wire format, pure: client frames → typed commands, server frames → bytes.

Nothing here does I/O. The gateway reads a frame, calls :func:`parse_frame`, and hands the
command to its handler; every server frame is built by the encoders below, once, and the
same :class:`Frame` object goes to every socket that receives it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from chat import commands
from chat.commands import Command
from chat.errors import BadRequest, ChatError, FrameId

MAX_FRAME_ID_CHARS = 128

_Parser = Callable[[Mapping[str, Any], FrameId, int], Command]

_PARSERS: dict[str, _Parser] = {
    "subscribe": lambda f, i, _: commands.subscribe(f, i),
    "unsubscribe": lambda f, i, _: commands.unsubscribe(f, i),
    "send": lambda f, i, max_chars: commands.send(f, i, max_chars=max_chars),
    "history": lambda f, i, _: commands.history(f, i),
    "heartbeat": lambda f, i, _: commands.heartbeat(f, i),
    "typing": lambda f, i, _: commands.typing(f, i),
    "read": lambda f, i, _: commands.read(f, i),
    "presence": lambda f, i, _: commands.presence_query(f, i),
    "presence_subscribe": lambda f, i, _: commands.presence_subscribe(f, i),
    "presence_unsubscribe": lambda f, i, _: commands.presence_unsubscribe(f, i),
}


def parse_frame(raw: str | bytes, *, max_message_chars: int) -> Command:
    """Parse one client frame; raise a ChatError answering the frame's ``id`` if it is invalid."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("frame must be a JSON object")
    frame_id = data.get("id")
    if frame_id is not None and (isinstance(frame_id, bool) or not isinstance(frame_id, (str, int, float))):
        raise BadRequest("id must be a string or a number")
    if isinstance(frame_id, str) and len(frame_id) > MAX_FRAME_ID_CHARS:
        raise BadRequest(f"id is longer than {MAX_FRAME_ID_CHARS} characters")
    op = data.get("op")
    if not isinstance(op, str):
        raise BadRequest("missing op").answering(frame_id)
    parser = _PARSERS.get(op)
    if parser is None:
        raise BadRequest(f"unknown op {op[:40]!r}").answering(frame_id)
    try:
        return parser(data, frame_id, max_message_chars)
    except ChatError as error:
        raise error.answering(frame_id) from None


def peek_frame_id(raw: str | bytes) -> FrameId:
    """The request's ``id`` for a refusal made before parsing (rate limiting): best effort, bounded."""
    if len(raw) > 4096:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None


# Server frames. Every frame names itself in "op" (as client frames do) and, for clients
# that prefer it, the same value in "type".


class Frame:
    """One encoded server frame, shared by every socket it is sent to: its JSON, and — built
    once, on first use — its text and its WebSocket framing."""

    __slots__ = ("data", "op", "_text", "_wire")

    def __init__(self, data: bytes, op: str = "") -> None:
        self.data = data  # the JSON, UTF-8
        self.op = op  # its "op" when known without decoding it ("" if not): what metrics count it as
        self._text: str | None = None
        self._wire: bytes | None = None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"Frame({self.data[:60]!r}{'…' if len(self.data) > 60 else ''})"

    @property
    def text(self) -> str:
        """The frame as ``str`` (for transports that take text), decoded once for every socket."""
        if self._text is None:
            self._text = self.data.decode()
        return self._text

    @property
    def wire(self) -> bytes:
        """The frame as a complete WebSocket text frame. Server frames are not masked, so these
        bytes are the same for every recipient: one copy serves a whole room."""
        if self._wire is None:
            self._wire = ws_text_header(len(self.data)) + self.data
        return self._wire


class BatchFrame(Frame):
    """A ``messages`` frame: several live messages of one channel, ascending by ID, encoded once
    for every socket of a hot room. ``ids`` are theirs; :meth:`singles` gives each message as its
    own ``message`` frame, built once on first use, for the sockets that must get them one by one
    (still in their subscribe seam, or with late copies to drop)."""

    __slots__ = ("ids", "_payloads", "_singles")

    def __init__(self, data: bytes, ids: list[int], payloads: list[bytes]) -> None:
        super().__init__(data)
        self.ids = ids
        self._payloads = payloads  # each message object's JSON
        self._singles: list[Frame] | None = None

    def singles(self) -> list[Frame]:
        if self._singles is None:
            self._singles = [Frame(b'{"op":"message","type":"message","message":%s}' % p) for p in self._payloads]
        return self._singles


def ws_text_header(length: int) -> bytes:
    """RFC 6455 header of an unmasked, final text frame carrying ``length`` bytes."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


def encode(op: str, fields: Mapping[str, Any]) -> bytes:
    """A server frame's bytes: encoded once, reused for every recipient (and every node)."""
    return orjson.dumps({"op": op, "type": op, **fields})


def frame(op: str, fields: Mapping[str, Any]) -> Frame:
    return Frame(encode(op, fields), op)


def reply(op: str, frame_id: FrameId, fields: Mapping[str, Any] | None = None) -> Frame:
    """A reply echoing the request's ``id`` (omitted when the request had none)."""
    body: dict[str, Any] = {} if frame_id is None else {"id": frame_id}
    if fields:
        body.update(fields)
    return frame(op, body)


def error_frame(error: ChatError) -> Frame:
    """The ``error`` frame for ``error``, answering ``error.frame_id`` when it has one."""
    return reply("error", error.frame_id, error.to_body())


def resync(channel: int) -> Frame:
    return frame("resync", {"channel": str(channel)})
