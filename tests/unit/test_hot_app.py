"""Hot rooms through the whole app in process (HTTP and WebSocket, SQLite, in-process relay and
waiting room): the waiting room's answers and frames, and a hot room's messages in batch frames."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.conftest import Node, make_node
from tests.unit.test_ws import Ws

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def hot_node(tmp_path: Path) -> Iterator[Node]:
    # Dynamic settings as a node finds them in its data dir at start.
    (tmp_path / "config.json").write_text(json.dumps({"hot_room_join_per_s": 2, "coalesce_window_s": 0.05}))
    yield from make_node(tmp_path, CHAT_USER_SEND_PER_S="1000", CHAT_USER_SEND_BURST="1000")


def pin(node: Node, room: str) -> None:
    protection = node.client.app.state.parts.protection
    node.client.portal.call(protection.pin, int(room), True)  # type: ignore[union-attr]


def ws(node: Node, user: str) -> Ws:
    return Ws(node.websocket(f"/v1/ws?token={node.token(user)}"))


def test_joins_over_a_hot_rooms_budget_are_throttled_with_their_place_then_admitted_with_a_ticket(hot_node: Node) -> None:
    room = hot_node.channel("owner", kind="room")
    pin(hot_node, room)
    late = ws(hot_node, "u4")
    answers: list[Any] = [hot_node.call("POST", f"/v1/channels/{room}/members", f"u{i}", json={}) for i in range(5)]
    assert [r.status_code for r in answers] == [200, 200, 429, 429, 429]
    errors = [r.json()["error"] for r in answers[2:]]
    assert [e["code"] for e in errors] == ["throttled"] * 3
    assert [e["position"] for e in errors] == [1, 2, 3] and all(e["channel"] == room for e in errors)
    assert all(e["retry_after_ms"] >= 1 for e in errors) and answers[2].headers["Retry-After"]
    assert late.expect("waiting") == {"op": "waiting", "type": "waiting", "channel": room, "position": 3}
    admitted = late.expect("admitted")  # within two seconds: two per second, two ahead
    assert admitted["channel"] == room and admitted["expires_in_ms"] > 0
    joined = hot_node.call("POST", f"/v1/channels/{room}/members", "u4", json={"ticket": admitted["ticket"]})
    assert joined.status_code == 200 and joined.json()["result"] == "added"
    bad = hot_node.call("POST", f"/v1/channels/{room}/members", "u9", json={"ticket": "not a number"})
    assert bad.status_code == 400


def test_a_hot_rooms_live_messages_arrive_in_messages_frames_in_order(hot_node: Node) -> None:
    room = hot_node.channel("ann", ["bob"], kind="room")
    pin(hot_node, room)
    bob = ws(hot_node, "bob")
    assert bob.request("subscribe", channels=[room])["op"] == "subscribed"
    ann = ws(hot_node, "ann")
    sent = []
    for i in range(6):
        ack = ann.request("send", channel=room, text=f"m{i}", client_msg_id=f"c{i}")
        assert ack["op"] == "ack", ack
        sent.append(ack["message"]["id"])
    got: list[str] = []
    batches = 0
    while len(got) < len(sent):
        frame = bob.recv()
        if frame["op"] == "messages":
            batches += 1
            assert frame["channel"] == room
            got += [m["id"] for m in frame["messages"]]
        elif frame["op"] == "message":
            got.append(frame["message"]["id"])
    assert got == sent and batches >= 1
    history = ann.request("history", channel=room, limit=3)
    assert [m["id"] for m in history["messages"]] == sent[-3:]
