"""The wire format, pure: client frames → typed commands, server frames → text.

Nothing here does I/O; the gateway reads bytes, calls :func:`parse_frame`, and hands
the command to the session. Every validation failure is a :class:`ChatError` whose
``frame_id`` lets the gateway echo the client's ``id`` on the ``error`` frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from chat.auth import valid_user_id
from chat.errors import BadRequest, ChatError, NotFound, TooLarge
from chat.ids import parse_id

MAX_CHANNELS_PER_FRAME = 500
MAX_USERS_PER_PRESENCE = 500
MAX_CLIENT_MSG_ID = 64
HISTORY_DEFAULT = 50
HISTORY_MAX = 200

FrameId = str | int | float | None


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: FrameId
    channels: tuple[int | None, ...]  # None: a name that can be no channel (reported as not_found)
    raw_channels: tuple[str, ...]  # as the client wrote them, echoed on replies
    since: dict[int, int]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: FrameId
    channels: tuple[int | None, ...]
    raw_channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Send:
    id: FrameId
    channel: int
    text: str
    client_msg_id: str


@dataclass(frozen=True, slots=True)
class History:
    id: FrameId
    channel: int
    before: int | None
    after: int | None
    limit: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    id: FrameId


@dataclass(frozen=True, slots=True)
class Typing:
    id: FrameId
    channel: int


@dataclass(frozen=True, slots=True)
class Read:
    id: FrameId
    channel: int
    message_id: int


@dataclass(frozen=True, slots=True)
class Presence:
    id: FrameId
    users: tuple[str, ...]


Command = Subscribe | Unsubscribe | Send | History | Heartbeat | Typing | Read | Presence


def _fail(error: ChatError, frame_id: FrameId) -> ChatError:
    error.frame_id = frame_id  # type: ignore[attr-defined]
    return error


def parse_frame(raw: str | bytes, *, max_message_chars: int) -> Command:
    """Parse one client frame; raise a ChatError (with ``frame_id`` set) if it is invalid."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _fail(BadRequest("frame is not valid JSON"), None) from None
    if not isinstance(data, dict):
        raise _fail(BadRequest("frame must be a JSON object"), None)
    frame_id = data.get("id")
    if frame_id is not None and (isinstance(frame_id, bool) or not isinstance(frame_id, (str, int, float))):
        raise _fail(BadRequest("id must be a string or a number"), None)
    if isinstance(frame_id, str) and len(frame_id) > 128:
        raise _fail(BadRequest("id is longer than 128 characters"), None)
    op = data.get("op")
    if not isinstance(op, str):
        raise _fail(BadRequest("missing op"), frame_id)
    parser = _PARSERS.get(op)
    if parser is None:
        raise _fail(BadRequest(f"unknown op {op[:40]!r}"), frame_id)
    try:
        return parser(data, frame_id, max_message_chars)
    except ChatError as error:
        raise _fail(error, frame_id) from None


def channel_ref(value: Any, field: str = "channel") -> int:
    """A channel reference: a decimal ID string. A string naming no possible channel is not_found."""
    if value is None:
        raise BadRequest(f"{field} is required")
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise BadRequest(f"{field} must be a channel id string")
    parsed = parse_id(value)
    if parsed is None:
        raise NotFound(f"no channel {str(value)[:40]!r}", channel=str(value)[:64])
    return parsed


def message_ref(value: Any, field: str) -> int:
    parsed = parse_id(value)
    if parsed is None:
        raise BadRequest(f"{field} must be a message id (a decimal string)")
    return parsed


def optional_message_ref(value: Any, field: str) -> int | None:
    return None if value is None else message_ref(value, field)


def history_limit(value: Any) -> int:
    if value is None:
        return HISTORY_DEFAULT
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= HISTORY_MAX:
        raise BadRequest(f"limit must be an integer from 1 to {HISTORY_MAX}")
    return value


def validate_text(text: Any, max_chars: int) -> str:
    if not isinstance(text, str):
        raise BadRequest("text must be a string")
    if not text:
        raise BadRequest("text must not be empty")
    if len(text) > max_chars:  # len() counts code points, as the protocol does
        raise TooLarge(f"text is longer than {max_chars} characters")
    return text


def validate_client_msg_id(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_CLIENT_MSG_ID:
        raise BadRequest(f"client_msg_id must be a string of 1 to {MAX_CLIENT_MSG_ID} characters")
    return value


def _channel_list(data: dict[str, Any]) -> tuple[tuple[int | None, ...], tuple[str, ...]]:
    channels = data.get("channels")
    if not isinstance(channels, list) or not channels:
        raise BadRequest("channels must be a non-empty list of channel ids")
    if len(channels) > MAX_CHANNELS_PER_FRAME:
        raise BadRequest(f"at most {MAX_CHANNELS_PER_FRAME} channels per frame")
    parsed: list[int | None] = []
    raw: list[str] = []
    for value in channels:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise BadRequest("channels must be a list of channel id strings")
        parsed.append(parse_id(value))
        raw.append(str(value)[:64])
    return tuple(parsed), tuple(raw)


def _subscribe(data: dict[str, Any], frame_id: FrameId, _: int) -> Subscribe:
    channels, raw = _channel_list(data)
    since_raw = data.get("since")
    since: dict[int, int] = {}
    if since_raw is not None:
        if not isinstance(since_raw, dict):
            raise BadRequest("since must be an object {channel: last_seen_message_id}")
        for key, value in since_raw.items():
            channel = parse_id(key)
            if channel is None:
                continue  # names no channel we could replay; the channel list reports it
            since[channel] = message_ref(value, "since value")
    return Subscribe(frame_id, channels, raw, since)


def _unsubscribe(data: dict[str, Any], frame_id: FrameId, _: int) -> Unsubscribe:
    channels, raw = _channel_list(data)
    return Unsubscribe(frame_id, channels, raw)


def _send(data: dict[str, Any], frame_id: FrameId, max_chars: int) -> Send:
    channel = channel_ref(data.get("channel"))
    client_msg_id = validate_client_msg_id(data.get("client_msg_id"))
    text = validate_text(data.get("text"), max_chars)
    return Send(frame_id, channel, text, client_msg_id)


def _history(data: dict[str, Any], frame_id: FrameId, _: int) -> History:
    return History(
        frame_id,
        channel_ref(data.get("channel")),
        optional_message_ref(data.get("before"), "before"),
        optional_message_ref(data.get("after"), "after"),
        history_limit(data.get("limit")),
    )


def _heartbeat(data: dict[str, Any], frame_id: FrameId, _: int) -> Heartbeat:
    return Heartbeat(frame_id)


def _typing(data: dict[str, Any], frame_id: FrameId, _: int) -> Typing:
    return Typing(frame_id, channel_ref(data.get("channel")))


def _read(data: dict[str, Any], frame_id: FrameId, _: int) -> Read:
    return Read(frame_id, channel_ref(data.get("channel")), message_ref(data.get("message_id"), "message_id"))


def _presence(data: dict[str, Any], frame_id: FrameId, _: int) -> Presence:
    users = data.get("users")
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise BadRequest("users must be a list of user ids")
    if len(users) > MAX_USERS_PER_PRESENCE:
        raise BadRequest(f"at most {MAX_USERS_PER_PRESENCE} users per presence query")
    for user in users:
        if not valid_user_id(user):
            raise BadRequest(f"invalid user id {user[:70]!r}")
    return Presence(frame_id, tuple(dict.fromkeys(users)))


_PARSERS = {
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "send": _send,
    "history": _history,
    "heartbeat": _heartbeat,
    "typing": _typing,
    "read": _read,
    "presence": _presence,
}


# Server frames. Every frame names itself in "op" (as client frames do) and, for
# clients that prefer it, the same value in "type".


def encode(op: str, fields: dict[str, Any]) -> bytes:
    """Encode a server frame once; callers reuse the bytes for every recipient."""
    return orjson.dumps({"op": op, "type": op, **fields})


def encode_text(op: str, fields: dict[str, Any]) -> str:
    return encode(op, fields).decode()


def reply(op: str, frame_id: FrameId, fields: dict[str, Any] | None = None) -> str:
    """A reply frame echoing the request's ``id`` (omitted when the request had none)."""
    body: dict[str, Any] = {} if frame_id is None else {"id": frame_id}
    if fields:
        body.update(fields)
    return encode_text(op, body)


def error_frame(error: ChatError, frame_id: FrameId = None) -> str:
    return reply("error", frame_id, error.to_body())
