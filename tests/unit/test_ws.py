"""PROTOCOL.md's WebSocket rows, in process: handshake, hello, every op and its errors.

"Nothing else arrived" is checked without waiting: a heartbeat is sent and its ack must be the
very next frame (the socket writes in order). Hangs are bounded by pytest-timeout.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.testclient import WebSocketDenialResponse, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from tests.unit.conftest import Node

pytestmark = pytest.mark.timeout(30)


class Ws:
    """A test socket. Presence pushes arrive whenever a user sharing a small channel comes or
    goes: they are set aside and returned only to ``expect("presence")``."""

    def __init__(self, session: WebSocketTestSession) -> None:
        self.session = session
        self.presence: list[dict[str, Any]] = []
        self.hello = self.expect("hello")
        self._n = 0

    def send(self, op: str, **fields: Any) -> str:
        self._n += 1
        frame_id = fields.pop("id", f"r{self._n}")
        self.session.send_text(orjson.dumps({"op": op, "id": frame_id, **fields}).decode())
        return str(frame_id)

    def recv(self, *, presence: bool = False) -> dict[str, Any]:
        if presence and self.presence:
            return self.presence.pop(0)
        while True:
            frame: dict[str, Any] = orjson.loads(self.session.receive_text())
            if presence or frame["op"] != "presence" or "id" in frame:
                return frame
            self.presence.append(frame)

    def expect(self, op: str) -> dict[str, Any]:
        frame = self.recv(presence=op == "presence")
        assert frame["op"] == op, frame
        return frame

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        frame_id = self.send(op, **fields)
        frame = self.recv()
        assert frame.get("id") == frame_id, frame
        return frame

    def nothing_pending(self) -> None:
        assert self.request("heartbeat")["op"] == "heartbeat_ack"


def connect(node: Node, user: str, path: str | None = None) -> Ws:
    return Ws(node.websocket(path or f"/v1/ws?token={node.token(user)}"))


def test_handshake_refuses_bad_tokens_with_401(node: Node) -> None:
    for path in ("/v1/ws", "/v1/ws?token=nonsense", f"/v1/ws?token={node.token('alice', ttl_s=-120)}"):
        with pytest.raises(WebSocketDenialResponse) as denied:
            node.websocket(path)
        assert denied.value.status_code == 401
        assert orjson.loads(denied.value.content)["error"]["code"] == "unauthorized"


def test_hello_names_the_node_session_and_user(node: Node) -> None:
    a, b = connect(node, "alice"), connect(node, "alice")
    assert a.hello["node_id"] == "inproc" and a.hello["user"] == "alice"
    assert a.hello["heartbeat_interval_ms"] == 5000 and a.hello["session_id"] != b.hello["session_id"]
    with node.client.websocket_connect("/v1/ws", headers=node.auth("carol")) as session:
        assert orjson.loads(session.receive_text())["user"] == "carol"


def test_send_acks_after_storing_and_every_subscriber_gets_it(node: Node) -> None:
    group = node.channel("alice", ["bob"])
    alice, bob = connect(node, "alice"), connect(node, "bob")
    for ws in (alice, bob):
        assert ws.request("subscribe", channels=[group]) == {"op": "subscribed", "type": "subscribed", "id": ws.session and "r1", "channel": group}
    ack = alice.request("send", channel=group, text="hi bob", client_msg_id="c-1")
    assert ack["op"] == "ack" and ack["message"]["text"] == "hi bob"
    assert bob.expect("message")["message"] == ack["message"]
    assert alice.expect("message")["message"]["id"] == ack["message"]["id"]  # the sender's own, too
    again = alice.request("send", channel=group, text="changed", client_msg_id="c-1")
    assert again["message"] == ack["message"]  # idempotent: nothing delivered again
    bob.nothing_pending()


def test_subscribe_reports_each_channel_in_order(node: Node) -> None:
    mine, theirs = node.channel("alice"), node.channel("bob")
    alice = connect(node, "alice")
    frame_id = alice.send("subscribe", channels=[mine, "123456789", theirs, mine, "nope"])
    got = [alice.recv() for _ in range(4)]
    assert [(f["op"], f.get("code"), f["channel"]) for f in got] == [
        ("subscribed", None, mine),
        ("error", "not_found", "123456789"),
        ("error", "forbidden", theirs),
        ("error", "not_found", "nope"),
    ]
    assert all(f["id"] == frame_id for f in got)
    alice.nothing_pending()  # the repeated channel was handled once


def test_subscribe_since_replays_then_goes_live(node: Node) -> None:
    group = node.channel("alice", ["bob"])
    stored = [node.post("alice", group, f"m{i}", f"k{i}").json()["message"]["id"] for i in range(5)]
    bob = connect(node, "bob")
    bob.send("subscribe", channels=[group], since={group: stored[1]})
    assert bob.expect("subscribed")["channel"] == group
    assert [bob.expect("message")["message"]["id"] for _ in range(3)] == stored[2:]
    live = node.post("alice", group, "live", "k-live").json()["message"]["id"]
    assert bob.expect("message")["message"]["id"] == live
    bob.nothing_pending()


def test_replay_is_capped_then_resync(tmp_path: object) -> None:
    from tests.unit.conftest import make_node

    for small in make_node(tmp_path, CHAT_REPLAY_CAP="2"):  # type: ignore[arg-type]
        group = small.channel("alice")
        stored = [small.post("alice", group, f"m{i}", f"k{i}").json()["message"]["id"] for i in range(4)]
        alice = connect(small, "alice")
        alice.send("subscribe", channels=[group], since={group: "0"})
        alice.expect("subscribed")
        assert [alice.expect("message")["message"]["id"] for _ in range(2)] == stored[:2]
        assert alice.expect("resync") == {"op": "resync", "type": "resync", "channel": group}


def test_history_over_the_socket(node: Node) -> None:
    group = node.channel("alice")
    stored = [node.post("alice", group, f"m{i}", f"k{i}").json()["message"]["id"] for i in range(3)]
    alice = connect(node, "alice")
    reply = alice.request("history", channel=group, limit=2)
    assert reply["op"] == "history" and reply["channel"] == group and reply["has_more"] is True
    assert [m["id"] for m in reply["messages"]] == stored[1:]
    for bad in (0, 201, "10", 2.5, True):
        assert alice.request("history", channel=group, limit=bad)["code"] == "bad_request"


def test_unsubscribe_stops_delivery(node: Node) -> None:
    group = node.channel("alice")
    alice = connect(node, "alice")
    alice.request("subscribe", channels=[group])
    assert alice.request("unsubscribe", channels=[group]) == {"op": "unsubscribed", "type": "unsubscribed", "id": "r2", "channels": [group]}
    node.post("alice", group, "unseen", "k1")
    alice.nothing_pending()


def test_typing_and_read_markers_reach_the_right_sockets(node: Node) -> None:
    group = node.channel("alice", ["bob"])
    phone, laptop, bob = connect(node, "alice"), connect(node, "alice"), connect(node, "bob")
    for ws in (phone, laptop, bob):
        ws.request("subscribe", channels=[group])
    message = node.post("bob", group, "hello", "k1").json()["message"]
    for ws in (phone, laptop, bob):
        ws.expect("message")
    phone.send("typing", channel=group)
    assert bob.expect("typing") == {"op": "typing", "type": "typing", "channel": group, "user": "alice"}
    assert laptop.expect("typing")["user"] == "alice"  # the user's other devices too, not the sender
    phone.send("read", channel=group, message_id=message["id"])
    assert laptop.expect("read") == {"op": "read", "type": "read", "channel": group, "message_id": message["id"]}
    phone.nothing_pending()  # not echoed to the device that sent it
    assert node.call("GET", "/v1/channels", "alice").json()["channels"][0]["last_read"] == message["id"]


def test_removed_members_are_unsubscribed(node: Node) -> None:
    group = node.channel("alice", ["bob"])
    bob = connect(node, "bob")
    bob.request("subscribe", channels=[group])
    assert node.call("DELETE", f"/v1/channels/{group}/members/bob", "alice").status_code == 204
    assert bob.expect("unsubscribed") == {"op": "unsubscribed", "type": "unsubscribed", "channels": [group], "reason": "removed"}
    node.post("alice", group, "after", "k1")
    bob.nothing_pending()
    assert bob.request("send", channel=group, text="x", client_msg_id="k")["code"] == "forbidden"


def test_added_members_hear_of_it(node: Node) -> None:
    carol = connect(node, "carol")
    group = node.channel("alice", ["carol"])
    joined = carol.expect("joined")
    assert joined["channel"]["id"] == group


def test_presence_answers_for_connected_users(node: Node) -> None:
    alice = connect(node, "alice")
    reply = alice.request("presence", users=["alice", "ghost"])
    assert reply["users"]["alice"]["status"] == "online" and reply["users"]["ghost"] == {"status": "offline", "last_seen": None}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"not json", "bad_request"),
        (b"[1, 2]", "bad_request"),
        (b'{"op": "fly"}', "bad_request"),
        (b'{"id": 1}', "bad_request"),
        (b'{"op": "send", "channel": "1", "text": "", "client_msg_id": "c"}', "bad_request"),
        (b'{"op": "send", "channel": "99", "text": "hi", "client_msg_id": "c"}', "not_found"),
    ],
)
def test_bad_frames_get_error_frames_and_the_socket_stays_open(node: Node, frame: bytes, code: str) -> None:
    alice = connect(node, "alice")
    alice.session.send_text(frame.decode())
    assert alice.expect("error")["code"] == code
    alice.nothing_pending()


def test_an_oversize_message_is_too_large_and_repeats_close_1009(node: Node) -> None:
    group = node.channel("alice")
    alice = connect(node, "alice")
    for strike in range(3):
        reply = alice.request("send", channel=group, text="x" * 100_001, client_msg_id=f"big{strike}")
        assert reply["code"] == "too_large"
    with pytest.raises(WebSocketDisconnect) as closed:
        alice.recv()
    assert closed.value.code == 1009


def test_flooding_is_refused_then_closed_1008(tmp_path: object) -> None:
    from tests.unit.conftest import make_node

    for strict in make_node(tmp_path, CHAT_RATE_PER_S="0.1", CHAT_RATE_BURST="2", CHAT_FLOOD_STRIKES="3"):  # type: ignore[arg-type]
        alice = connect(strict, "alice")
        for _ in range(5):
            alice.send("heartbeat")
        replies = [alice.recv() for _ in range(4)]  # the third refusal in a row is the close
        assert [r["op"] for r in replies] == ["heartbeat_ack", "heartbeat_ack", "error", "error"]
        assert replies[2]["code"] == "rate_limited" and replies[2]["retry_after_ms"] > 0 and replies[2]["id"] == "r3"
        with pytest.raises(WebSocketDisconnect) as closed:
            alice.recv()
        assert closed.value.code == 1008


def test_abuse_limits_per_user_and_per_address(tmp_path: object) -> None:
    """Issue 12 item 5: one user cannot hold unbounded sockets nor send past a per-user rate
    spread over many sockets; one address cannot open handshakes without bound."""
    from tests.unit.conftest import make_node

    env = {"CHAT_USER_MAX_SOCKETS": "3", "CHAT_USER_SEND_PER_S": "0.1", "CHAT_USER_SEND_BURST": "4", "CHAT_HANDSHAKE_BURST": "6", "CHAT_HANDSHAKE_PER_S": "0.1"}
    for limited in make_node(tmp_path, **env):  # type: ignore[arg-type]
        group = limited.channel("mallory")
        sockets = [connect(limited, "mallory") for _ in range(3)]
        with pytest.raises(WebSocketDenialResponse) as refused:
            connect(limited, "mallory")  # a fourth socket of the same user
        assert refused.value.status_code == 429 and orjson.loads(refused.value.content)["error"]["code"] == "rate_limited"
        codes = [sockets[i % 3].request("send", channel=group, text="spam", client_msg_id=f"k{i}")["op"] for i in range(6)]
        assert codes == ["ack"] * 4 + ["error"] * 2  # four in the user's burst, over three sockets
        refusal = sockets[0].request("send", channel=group, text="spam", client_msg_id="k-more")
        assert refusal["code"] == "rate_limited" and refusal["retry_after_ms"] > 0
        assert len(limited.call("GET", f"/v1/channels/{group}/messages", "mallory").json()["messages"]) == 4
        connect(limited, "someone")  # handshake 5 from this address
        connect(limited, "someone-else")  # 6
        with pytest.raises(WebSocketDenialResponse) as flooded:
            connect(limited, "yet-another")  # the address's 7th handshake in its burst of 6
        assert flooded.value.status_code == 429
