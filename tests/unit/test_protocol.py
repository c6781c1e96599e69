"""Frame validation table: each bad frame maps to its protocol code and echoes the id."""

from __future__ import annotations

import orjson
import pytest

from chat import protocol
from chat.commands import ChannelRef, Command, Heartbeat, History, PresenceQuery, Read, Send, Subscribe, Typing
from chat.errors import ChatError

MAX = 100_000


def parse(frame: object) -> Command:
    raw = frame if isinstance(frame, (str, bytes)) else orjson.dumps(frame)
    return protocol.parse_frame(raw, max_message_chars=MAX)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_request"),
        ("[1, 2]", "bad_request"),
        ('"send"', "bad_request"),
        ({"id": 1}, "bad_request"),
        ({"op": 5}, "bad_request"),
        ({"op": "nope"}, "bad_request"),
        ({"op": "heartbeat", "id": {"x": 1}}, "bad_request"),
        ({"op": "heartbeat", "id": True}, "bad_request"),
        ({"op": "send", "channel": "1", "client_msg_id": "c"}, "bad_request"),
        ({"op": "send", "channel": "1", "client_msg_id": "c", "text": ""}, "bad_request"),
        ({"op": "send", "channel": "1", "client_msg_id": "c", "text": 5}, "bad_request"),
        ({"op": "send", "channel": "1", "client_msg_id": "c", "text": ["hi"]}, "bad_request"),
        ({"op": "send", "channel": "1", "client_msg_id": "c", "text": "x" * (MAX + 1)}, "too_large"),
        ({"op": "send", "channel": "1", "text": "hi"}, "bad_request"),
        ({"op": "send", "channel": "1", "text": "hi", "client_msg_id": ""}, "bad_request"),
        ({"op": "send", "channel": "1", "text": "hi", "client_msg_id": "c" * 65}, "bad_request"),
        ({"op": "send", "channel": "1", "text": "hi", "client_msg_id": 7}, "bad_request"),
        ({"op": "send", "text": "hi", "client_msg_id": "c"}, "bad_request"),
        ({"op": "send", "channel": {"a": 1}, "text": "hi", "client_msg_id": "c"}, "bad_request"),
        ({"op": "send", "channel": "general", "text": "hi", "client_msg_id": "c"}, "not_found"),
        ({"op": "subscribe"}, "bad_request"),
        ({"op": "subscribe", "channels": []}, "bad_request"),
        ({"op": "subscribe", "channels": "1"}, "bad_request"),
        ({"op": "subscribe", "channels": [None]}, "bad_request"),
        ({"op": "subscribe", "channels": [str(n) for n in range(1, 502)]}, "bad_request"),
        ({"op": "subscribe", "channels": ["1"], "since": ["1"]}, "bad_request"),
        ({"op": "subscribe", "channels": ["1"], "since": {"1": "abc"}}, "bad_request"),
        ({"op": "unsubscribe", "channels": 3}, "bad_request"),
        ({"op": "history", "channel": "1", "limit": 0}, "bad_request"),
        ({"op": "history", "channel": "1", "limit": 201}, "bad_request"),
        ({"op": "history", "channel": "1", "limit": "50"}, "bad_request"),
        ({"op": "history", "channel": "1", "limit": 2.5}, "bad_request"),
        ({"op": "history", "channel": "1", "before": "x"}, "bad_request"),
        ({"op": "history", "channel": "1", "after": -4}, "bad_request"),
        ({"op": "typing"}, "bad_request"),
        ({"op": "read", "channel": "1"}, "bad_request"),
        ({"op": "read", "channel": "1", "message_id": "soon"}, "bad_request"),
        ({"op": "presence", "users": "bob"}, "bad_request"),
        ({"op": "presence", "users": ["bad user!"]}, "bad_request"),
        ({"op": "presence", "users": [1]}, "bad_request"),
        ({"op": "presence", "users": [f"u{n}" for n in range(1001)]}, "bad_request"),
    ],
)
def test_bad_frames_map_to_codes(frame: object, code: str) -> None:
    with pytest.raises(ChatError) as error:
        parse(frame)
    assert error.value.code == code


def test_error_echoes_the_frame_id() -> None:
    with pytest.raises(ChatError) as error:
        parse({"op": "send", "id": "abc", "channel": "1", "text": "", "client_msg_id": "c"})
    assert error.value.frame_id == "abc"
    frame = orjson.loads(protocol.error_frame(error.value).data)
    assert frame == {"op": "error", "type": "error", "id": "abc", "code": "bad_request", "message": "text must not be empty"}


def test_valid_frames_parse_to_commands() -> None:
    assert parse({"op": "send", "id": 3, "channel": "12", "text": "x" * MAX, "client_msg_id": "c-1"}) == Send(3, 12, "x" * MAX, "c-1")
    sub = parse({"op": "subscribe", "channels": ["12", "nope", "12"], "since": {"12": "40", "nope": "1"}})
    assert isinstance(sub, Subscribe)
    assert sub.channels == (ChannelRef("12", 12), ChannelRef("nope", None)) and sub.since == {12: 40}
    assert parse({"op": "history", "channel": "12"}) == History(None, 12, None, None, 50)
    assert parse({"op": "history", "channel": "12", "before": "9", "after": "3", "limit": 200}) == History(None, 12, 9, 3, 200)
    assert parse({"op": "heartbeat", "extra": "ignored"}) == Heartbeat(None)
    assert parse({"op": "read", "channel": "5", "message_id": "77"}) == Read(None, 5, 77)
    assert parse({"op": "presence", "users": ["a", "b", "a"]}) == PresenceQuery(None, ("a", "b"))
    assert parse(b'{"op":"typing","channel":"8"}') == Typing(None, 8)


def test_text_length_counts_code_points() -> None:
    emoji = "🙂" * MAX  # 100,000 code points, 200,000 UTF-16 units, 400,000 UTF-8 bytes
    assert isinstance(parse({"op": "send", "channel": "1", "text": emoji, "client_msg_id": "c"}), Send)


def test_server_frames_name_themselves() -> None:
    assert orjson.loads(protocol.reply("ack", 5, {"message": {}}).data) == {"op": "ack", "type": "ack", "id": 5, "message": {}}
    assert "id" not in orjson.loads(protocol.reply("heartbeat_ack", None).data)
