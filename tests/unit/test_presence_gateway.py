"""Presence through the gateway, in process: who gets pushed what, the ops and the endpoints.
(The cluster — two nodes on one Redis — is in tests/e2e/test_presence_cluster.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.conftest import Node, make_node
from tests.unit.test_ws import Ws, connect

pytestmark = pytest.mark.timeout(30)


def leave(ws: Ws) -> None:
    """A clean close (1000), as a client that means to leave."""
    ws.session.close(1000)


def test_a_dm_partner_sees_the_other_come_online_and_leave(node: Node) -> None:
    dm = node.call("POST", "/v1/dms", "alice", json={"user": "bob"}).json()["channel"]["id"]
    alice = connect(node, "alice")
    alice.request("subscribe", channels=[dm])
    bob = connect(node, "bob")
    online = alice.expect("presence")
    assert online["user"] == "bob" and online["status"] == "online" and isinstance(online["last_seen"], int)
    leave(bob)
    offline = alice.expect("presence")
    assert offline["user"] == "bob" and offline["status"] == "offline" and offline["last_seen"] >= online["last_seen"]
    assert node.call("GET", "/v1/presence?user=bob", "alice").json() == {"users": {"bob": {"status": "offline", "last_seen": offline["last_seen"]}}}


def test_a_user_with_two_devices_goes_offline_only_when_both_left(node: Node) -> None:
    dm = node.call("POST", "/v1/dms", "alice", json={"user": "bob"}).json()["channel"]["id"]
    alice = connect(node, "alice")
    alice.request("subscribe", channels=[dm])
    phone, laptop = connect(node, "bob"), connect(node, "bob")
    assert alice.expect("presence")["status"] == "online"  # once, not once per device
    leave(phone)
    assert node.call("GET", "/v1/presence?user=bob", "alice").json()["users"]["bob"]["status"] == "online"
    leave(laptop)
    assert alice.expect("presence")["status"] == "offline"


def test_large_channels_get_no_pushes_but_can_ask(tmp_path: Path) -> None:
    for small in make_node(tmp_path, CHAT_PRESENCE_FANOUT_MAX="2"):
        room = small.channel("alice", ["bob", "carol"], kind="room")  # 3 members > 2
        dm = small.call("POST", "/v1/dms", "alice", json={"user": "carol"}).json()["channel"]["id"]
        alice, bob = connect(small, "alice"), connect(small, "bob")
        for ws in (alice, bob):
            ws.request("subscribe", channels=[room])
        alice.request("subscribe", channels=[dm])
        carol = connect(small, "carol")
        assert alice.expect("presence")["user"] == "carol"  # through the DM
        leave(carol)
        assert alice.expect("presence")["status"] == "offline"
        bob.nothing_pending()  # a member of the large room only: nothing pushed
        assert small.call("GET", f"/v1/channels/{room}/presence", "bob").json() == {"online": 2, "users": ["alice", "bob"]}


def test_presence_subscribe_watches_anyone(node: Node) -> None:
    watcher = connect(node, "watcher")
    reply = watcher.request("presence_subscribe", users=["star", "star"])
    assert reply["op"] == "presence" and reply["users"] == {"star": {"status": "offline", "last_seen": None}}
    star = connect(node, "star")
    assert watcher.expect("presence")["user"] == "star"
    assert watcher.request("presence_unsubscribe", users=["star"])["op"] == "presence_unsubscribed"
    leave(star)
    watcher.nothing_pending()


def test_nobody_is_told_about_themselves(node: Node) -> None:
    dm = node.call("POST", "/v1/dms", "alice", json={"user": "bob"}).json()["channel"]["id"]
    alice = connect(node, "alice")
    alice.request("subscribe", channels=[dm])
    alice.request("presence_subscribe", users=["alice"])
    connect(node, "alice")  # a second device
    bob = connect(node, "bob")
    assert alice.expect("presence")["user"] == "bob"
    del bob


def test_presence_endpoints_validate_and_keep_members_only(node: Node) -> None:
    group = node.channel("alice", ["bob"])
    assert node.call("GET", "/v1/presence", "alice").status_code == 400
    assert node.call("GET", "/v1/presence?user=bad!", "alice").status_code == 400
    assert node.call("GET", "/v1/presence?user=x").status_code == 401
    assert node.call("GET", f"/v1/channels/{group}/presence", "mallory").status_code == 403
    connect(node, "bob")
    body = node.call("GET", f"/v1/channels/{group}/presence", "alice").json()
    assert body == {"online": 1, "users": ["bob"]}


def test_heartbeat_interval_comes_from_settings(tmp_path: Path) -> None:
    for custom in make_node(tmp_path, CHAT_PRESENCE_HEARTBEAT_S="2", CHAT_PRESENCE_TIMEOUT_S="10"):
        assert connect(custom, "alice").hello["heartbeat_interval_ms"] == 2000
