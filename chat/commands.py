"""Typed commands: what a client asks for, validated once, whichever way it arrived.

A WebSocket frame (``chat.protocol.parse_frame``) and an HTTP request (``chat.api``) are
turned into the same frozen dataclasses by the parsers here; handlers and the service take
only these, so nothing on the message path is validated twice or typed ``object``. Every
parser raises :class:`~chat.errors.ChatError` with the protocol's code on bad input.

Numbers from the wire are parsed strictly: ASCII digits only and a bounded length, so
``'²'``, ``'٥'`` or a 5,000-digit string is ``bad_request``, never a 500 or a surprise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chat.errors import BadRequest, FrameId, NotFound, TooLarge
from chat.ids import parse_id

# Limits
MAX_CHANNELS_PER_FRAME = 500  # distinct channels in one subscribe/unsubscribe (the web client sends 500 at most)
MAX_USERS_PER_QUERY = 1000  # users in one presence query or presence_subscribe
MAX_WATCHED_PER_SOCKET = 1000  # users one socket may watch with presence_subscribe
MAX_CLIENT_MSG_ID = 64
MAX_CHANNEL_NAME = 100
MAX_MEMBERS_PER_REQUEST = 10_000
HISTORY_DEFAULT = 50
HISTORY_MAX = 200
CHANNEL_PAGE_MAX = 1000  # channels per GET /v1/channels page (also the default: what the list held unpaged)

USER_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SMALL_INT_RE = re.compile(r"[0-9]{1,9}")
_TICKET_RE = re.compile(r"[0-9]{1,20}")


def valid_user_id(value: object) -> bool:
    """A user ID: 1-64 characters of ``[A-Za-z0-9_.-]``."""
    return isinstance(value, str) and USER_ID_RE.fullmatch(value) is not None


# Commands of the WebSocket protocol (some also arrive over HTTP)


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """A channel as the client wrote it (echoed on replies) and its ID (None: names no channel)."""

    raw: str
    id: int | None


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: FrameId
    channels: tuple[ChannelRef, ...]  # distinct, in the order given
    since: Mapping[int, int]  # channel → last seen message ID


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: FrameId
    channels: tuple[ChannelRef, ...]


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
class PresenceQuery:
    id: FrameId
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PresenceSubscribe:
    id: FrameId
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PresenceUnsubscribe:
    id: FrameId
    users: tuple[str, ...]


Command = Subscribe | Unsubscribe | Send | History | Heartbeat | Typing | Read | PresenceQuery | PresenceSubscribe | PresenceUnsubscribe


# Commands of the HTTP API only


@dataclass(frozen=True, slots=True)
class CreateChannel:
    kind: str  # "group" | "room"
    name: str
    members: tuple[str, ...]  # besides the creator


@dataclass(frozen=True, slots=True)
class OpenDm:
    user: str


@dataclass(frozen=True, slots=True)
class AddMember:
    channel: int
    user: str | None  # None: the caller joins
    ticket: str | None = None  # a hot room's admission ticket (the `admitted` frame's), when joining yourself


@dataclass(frozen=True, slots=True)
class RemoveMember:
    channel: int
    user: str


@dataclass(frozen=True, slots=True)
class ListChannels:
    before: int | None  # the cursor: only channels with a smaller ID (None: from the newest)
    limit: int


# Field validators


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


def optional_message_ref(value: Any, field: str, *, from_text: bool = False) -> int | None:
    """An optional message ID (in a query string, an empty value is absent too)."""
    return None if value is None or (from_text and value == "") else message_ref(value, field)


def small_int(value: Any, field: str, lo: int, hi: int, *, from_text: bool = False) -> int:
    """An integer in ``[lo, hi]``: a JSON integer, or with ``from_text`` (query strings) ASCII digits."""
    if from_text and isinstance(value, str) and _SMALL_INT_RE.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"{field} must be an integer from {lo} to {hi}")
    return value


def history_limit(value: Any, *, from_text: bool = False) -> int:
    if value is None or (from_text and value == ""):
        return HISTORY_DEFAULT
    return small_int(value, "limit", 1, HISTORY_MAX, from_text=from_text)


def text(value: Any, max_chars: int) -> str:
    if not isinstance(value, str):
        raise BadRequest("text must be a string")
    if not value:
        raise BadRequest("text must not be empty")
    if len(value) > max_chars:  # len() counts code points, as the protocol does
        raise TooLarge(f"text is longer than {max_chars} characters")
    return value


def client_msg_id(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_CLIENT_MSG_ID:
        raise BadRequest(f"client_msg_id must be a string of 1 to {MAX_CLIENT_MSG_ID} characters")
    return value


def user_id(value: Any, field: str = "user") -> str:
    if not valid_user_id(value):
        raise BadRequest(f"{field} must be a user id (1-64 characters of [A-Za-z0-9_.-])")
    assert isinstance(value, str)
    return value


def user_list(value: Any, field: str, max_users: int) -> tuple[str, ...]:
    """A list of user IDs, duplicates removed (first occurrence kept)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadRequest(f"{field} must be a list of user ids")
    if len(value) > max_users:
        raise BadRequest(f"at most {max_users} users in {field}")
    for user in value:
        if not valid_user_id(user):
            raise BadRequest(f"invalid user id {str(user)[:70]!r} in {field}")
    return tuple(dict.fromkeys(value))


def channel_list(value: Any) -> tuple[ChannelRef, ...]:
    """Channels of a subscribe/unsubscribe: distinct (first occurrence kept) and capped."""
    if not isinstance(value, list) or not value:
        raise BadRequest("channels must be a non-empty list of channel ids")
    refs: dict[str, ChannelRef] = {}
    for item in value:
        if not isinstance(item, (str, int)) or isinstance(item, bool):
            raise BadRequest("channels must be a list of channel id strings")
        raw = str(item)[:64]
        if raw not in refs:
            if len(refs) == MAX_CHANNELS_PER_FRAME:
                raise BadRequest(f"at most {MAX_CHANNELS_PER_FRAME} channels per frame")
            refs[raw] = ChannelRef(raw, parse_id(item))
    return tuple(refs.values())


# Parsers: fields (a frame or a body, already a JSON object) → command


def subscribe(fields: Mapping[str, Any], frame_id: FrameId) -> Subscribe:
    channels = channel_list(fields.get("channels"))
    since_raw = fields.get("since")
    since: dict[int, int] = {}
    if since_raw is not None:
        if not isinstance(since_raw, dict):
            raise BadRequest("since must be an object {channel: last_seen_message_id}")
        wanted = {ref.id for ref in channels if ref.id is not None}
        for key, value in since_raw.items():
            channel = parse_id(key)
            if channel in wanted:  # anything else cannot be replayed: ignored like unknown fields
                since[channel] = message_ref(value, "since value")
    return Subscribe(frame_id, channels, since)


def unsubscribe(fields: Mapping[str, Any], frame_id: FrameId) -> Unsubscribe:
    return Unsubscribe(frame_id, channel_list(fields.get("channels")))


def send(fields: Mapping[str, Any], frame_id: FrameId, *, channel: int | None = None, max_chars: int) -> Send:
    """A send from a frame (``channel`` in the fields) or an HTTP body (``channel`` from the path)."""
    return Send(
        frame_id,
        channel_ref(fields.get("channel")) if channel is None else channel,
        text(fields.get("text"), max_chars),
        client_msg_id(fields.get("client_msg_id")),
    )


def history(fields: Mapping[str, Any], frame_id: FrameId) -> History:
    """A history request from a frame (``limit`` a JSON integer)."""
    return History(
        frame_id,
        channel_ref(fields.get("channel")),
        optional_message_ref(fields.get("before"), "before"),
        optional_message_ref(fields.get("after"), "after"),
        history_limit(fields.get("limit")),
    )


def history_query(channel: int, query: Mapping[str, str]) -> History:
    """A history request from an HTTP query string (numbers as ASCII digits, parsed strictly)."""
    return History(
        None,
        channel,
        optional_message_ref(query.get("before"), "before", from_text=True),
        optional_message_ref(query.get("after"), "after", from_text=True),
        history_limit(query.get("limit"), from_text=True),
    )


def heartbeat(fields: Mapping[str, Any], frame_id: FrameId) -> Heartbeat:
    return Heartbeat(frame_id)


def typing(fields: Mapping[str, Any], frame_id: FrameId) -> Typing:
    return Typing(frame_id, channel_ref(fields.get("channel")))


def read(fields: Mapping[str, Any], frame_id: FrameId) -> Read:
    return Read(frame_id, channel_ref(fields.get("channel")), message_ref(fields.get("message_id"), "message_id"))


def presence_query(fields: Mapping[str, Any], frame_id: FrameId) -> PresenceQuery:
    return PresenceQuery(frame_id, _presence_users(fields))


def presence_subscribe(fields: Mapping[str, Any], frame_id: FrameId) -> PresenceSubscribe:
    return PresenceSubscribe(frame_id, _presence_users(fields))


def presence_unsubscribe(fields: Mapping[str, Any], frame_id: FrameId) -> PresenceUnsubscribe:
    return PresenceUnsubscribe(frame_id, _presence_users(fields))


def presence_users_query(values: list[str]) -> tuple[str, ...]:
    """``GET /v1/presence?user=a&user=b``: at least one, at most 1,000 users."""
    if not values:
        raise BadRequest("name at least one user: ?user=alice&user=bob")
    return user_list(values, "user", MAX_USERS_PER_QUERY)


def _presence_users(fields: Mapping[str, Any]) -> tuple[str, ...]:
    users = fields.get("users")
    if not isinstance(users, list):
        raise BadRequest("users must be a list of user ids")
    return user_list(users, "users", MAX_USERS_PER_QUERY)


def create_channel(body: Mapping[str, Any]) -> CreateChannel:
    kind = body.get("kind")
    if kind not in ("group", "room"):
        raise BadRequest("kind must be 'group' or 'room' (DMs are opened with POST /v1/dms)")
    name = body.get("name")
    if not isinstance(name, str):
        raise BadRequest("name must be a string")
    name = name.strip()
    if not 1 <= len(name) <= MAX_CHANNEL_NAME:
        raise BadRequest(f"name must be 1 to {MAX_CHANNEL_NAME} characters")
    return CreateChannel(kind, name, user_list(body.get("members"), "members", MAX_MEMBERS_PER_REQUEST))


def open_dm(body: Mapping[str, Any]) -> OpenDm:
    return OpenDm(user_id(body.get("user")))


def add_member(channel: int, body: Mapping[str, Any]) -> AddMember:
    user, ticket = body.get("user"), body.get("ticket")
    if ticket is not None and not (isinstance(ticket, str) and _TICKET_RE.fullmatch(ticket)):
        raise BadRequest("ticket must be the decimal string an admitted frame carried")
    return AddMember(channel, None if user is None else user_id(user), ticket)


def remove_member(channel: int, user: str) -> RemoveMember:
    return RemoveMember(channel, user_id(user))


def list_channels(query: Mapping[str, str]) -> ListChannels:
    """A page of the caller's channel list from a query string (``cursor``, ``limit``)."""
    cursor = query.get("cursor") or None
    before = None if cursor is None else parse_id(cursor)
    if cursor is not None and before is None:
        raise BadRequest("cursor must be the next_cursor of an earlier page")
    limit = query.get("limit") or None
    return ListChannels(before, CHANNEL_PAGE_MAX if limit is None else small_int(limit, "limit", 1, CHANNEL_PAGE_MAX, from_text=True))
