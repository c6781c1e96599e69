"""Issue 12, item 7 (no 500 on odd numbers): every number that comes from the wire or the
environment is ASCII digits of bounded length. '²' (``str.isdigit`` says yes, ``int`` says no),
'٥' (``int`` reads it as 5), '1_000', 'nan', 'inf' and 5,000 digits (``int`` refuses more than
4,300) are refused with the protocol's code, over HTTP and WebSocket, and never reach ``int()``."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from chat.config import ConfigError, from_env
from tests.unit.conftest import Node
from tests.unit.test_ws import connect

ODD = ["²", "٥", "1" * 5000, "1_000", "-1", " 1", "1.0", "0x10", "nan", "inf", "１"]  # the last: a fullwidth 1


def code_of(response: object) -> str:
    return response.json()["error"]["code"]  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize("value", ODD)
def test_http_query_numbers(node: Node, value: str) -> None:
    group = node.channel("alice")
    node.post("alice", group, "hi", "k1")
    for name in ("limit", "before", "after"):
        r = node.call("GET", f"/v1/channels/{group}/messages", "alice", params={name: value})
        assert (r.status_code, code_of(r)) == (400, "bad_request"), (name, r.text)
    for name in ("limit", "cursor"):
        r = node.call("GET", "/v1/channels", "alice", params={name: value})
        assert (r.status_code, code_of(r)) == (400, "bad_request"), (name, r.text)


@pytest.mark.parametrize("value", ODD)
def test_http_path_numbers(node: Node, value: str) -> None:
    """A path segment that is not an ID names no channel: 404, like any unknown channel."""
    for method, path in (("GET", "/v1/channels/{}"), ("GET", "/v1/channels/{}/messages"), ("POST", "/v1/channels/{}/members")):
        r = node.call(method, path.format(value), "alice", json={})
        assert (r.status_code, code_of(r)) == (404, "not_found"), (path, r.text)
    group = node.channel("alice")
    r = node.call("DELETE", f"/v1/channels/{group}/members/{value}", "alice")
    assert r.status_code in (400, 404) and code_of(r) in ("bad_request", "not_found")


@pytest.mark.parametrize("value", ODD)
def test_websocket_numbers(node: Node, value: str) -> None:
    group = node.channel("alice")
    alice = connect(node, "alice")
    assert alice.request("history", channel=group, before=value)["code"] == "bad_request"
    assert alice.request("history", channel=group, after=value)["code"] == "bad_request"
    assert alice.request("history", channel=group, limit=value)["code"] == "bad_request"
    assert alice.request("read", channel=group, message_id=value)["code"] == "bad_request"
    assert alice.request("send", channel=value, text="x", client_msg_id="k")["code"] == "not_found"
    assert alice.request("subscribe", channels=[group], since={group: value})["code"] == "bad_request"
    reply = alice.request("subscribe", channels=[value])
    assert (reply["op"], reply["code"]) == ("error", "not_found")
    alice.nothing_pending()


def test_websocket_json_numbers_beyond_64_bits(node: Node) -> None:
    """A 5,000-digit JSON integer is not an integer the server reads."""
    group = node.channel("alice")
    alice = connect(node, "alice")
    huge = "9" * 5000
    alice.session.send_text(f'{{"op": "history", "id": "h", "channel": "{group}", "limit": {huge}}}')
    assert alice.expect("error")["code"] == "bad_request"
    alice.session.send_text(f'{{"op": "history", "id": {huge}, "channel": "{group}"}}')
    assert alice.expect("error")["code"] == "bad_request"
    alice.session.send_text(orjson.dumps({"op": "history", "id": "h", "channel": group, "limit": 1e308}).decode())
    assert alice.expect("error")["code"] == "bad_request"
    alice.nothing_pending()


@pytest.mark.parametrize("value", ["²", "٥", "1" * 5000, "1_000", "nan", "inf", "-inf", "1e3", "１"])
def test_environment_numbers(tmp_path: Path, value: str) -> None:
    base = {"CHAT_JWT_SECRET": "k" * 40, "CHAT_DATA_DIR": str(tmp_path)}
    for name in ("CHAT_PORT", "CHAT_REPLAY_CAP", "CHAT_PING_TIMEOUT_S", "CHAT_RATE_PER_S"):
        with pytest.raises(ConfigError) as error:
            from_env({**base, name: value})
        assert len(error.value.problems) == 1 and error.value.problems[0].startswith(name), error.value.problems
    with pytest.raises(ConfigError):
        from_env({**base, "CHAT_CASSANDRA_HOSTS": f"db1:{value}"})
    with pytest.raises(ConfigError):
        from_env({**base, "CHAT_REDIS_URL": f"redis://:secret@cache:{value}/0"})


def test_environment_numbers_that_are_fine(tmp_path: Path) -> None:
    s = from_env({"CHAT_JWT_SECRET": "k" * 40, "CHAT_PORT": "8080", "CHAT_PING_TIMEOUT_S": "2.5", "CHAT_CASSANDRA_HOSTS": "db1:9042,[::1]:9043,db2"})
    assert (s.port, s.ping_timeout_s, s.cassandra_hosts) == (8080, 2.5, ("db1:9042", "[::1]:9043", "db2"))
