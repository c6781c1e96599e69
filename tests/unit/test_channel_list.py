"""Issue 12, item 8 (others cannot bury a user's conversations): the channel list pages with a
cursor, and adding *other* users to channels is limited per adder and per added user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.conftest import Node, make_node

pytestmark = pytest.mark.timeout(120)


def page_through(node: Node, user: str, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        body = node.call("GET", "/v1/channels", user, params=query).json()
        pages.append([c["id"] for c in body["channels"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_a_victim_of_1050_rooms_pages_to_their_dm_and_the_adders_hit_the_limit(tmp_path: Path) -> None:
    """1,050 rooms made by others with the victim in them (the day's budget, raised to exactly
    that): the default page still holds 1,000 as before, the cursor leads to the DM, and the
    next add is refused."""
    for node in make_node(tmp_path, CHAT_ADDED_BY_OTHERS_PER_DAY="1050"):
        dm = node.call("POST", "/v1/dms", "vic", json={"user": "friend"}).json()["channel"]["id"]
        rooms = []
        for adder in range(7):  # 150 each: within one adder's burst (200) and the HTTP bucket (200)
            for i in range(150):
                r = node.call("POST", "/v1/channels", f"adder{adder}", json={"kind": "room", "name": f"spam {i}", "members": ["vic"]})
                assert r.status_code == 201, r.text
                rooms.append(r.json()["channel"]["id"])
        pages = page_through(node, "vic")
        assert [len(p) for p in pages] == [1000, 51]
        assert pages[0] == rooms[::-1][:1000] and pages[1] == [*rooms[::-1][1000:], dm]
        assert page_through(node, "vic", limit="400") == [rooms[::-1][:400], rooms[::-1][400:800], [*rooms[::-1][800:], dm]]
        r = node.call("POST", "/v1/channels", "adder9", json={"kind": "room", "name": "one more", "members": ["vic"]})
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited", r.text
        assert r.json()["error"]["user"] == "vic" and r.json()["error"]["retry_after_ms"] > 0 and int(r.headers["Retry-After"]) >= 1
        assert sum(len(p) for p in page_through(node, "vic")) == 1051  # the refused room was not made


def test_an_adder_is_rate_limited_and_nothing_is_stored(tmp_path: Path) -> None:
    for node in make_node(tmp_path, CHAT_GROUP_MAX_MEMBERS="10", CHAT_ADD_OTHERS_BURST="12", CHAT_ADD_OTHERS_PER_MIN="1"):
        group = node.channel("mallory", ["a", "b", "c", "d", "e", "f", "g", "h"])  # 8 others
        room = node.channel("mallory", kind="room")
        assert node.call("POST", f"/v1/channels/{room}/members", "mallory", json={"user": "j"}).json()["result"] == "added"
        assert node.call("POST", "/v1/dms", "mallory", json={"user": "k"}).status_code == 201
        assert node.call("POST", "/v1/dms", "mallory", json={"user": "k"}).status_code == 200  # an existing DM costs nothing
        assert node.call("POST", f"/v1/channels/{room}/members", "mallory", json={"user": "j"}).json()["result"] == "already"
        for user in ("l", "m"):
            assert node.call("POST", "/v1/dms", "mallory", json={"user": user}).status_code == 201
        # 12 others added: the burst is spent, every way of adding someone is refused.
        for method, path, body in (
            ("POST", f"/v1/channels/{room}/members", {"user": "x"}),
            ("POST", "/v1/dms", {"user": "y"}),
            ("POST", "/v1/channels", {"kind": "room", "name": "r", "members": ["z"]}),
        ):
            r = node.call(method, path, "mallory", json=body)
            assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited", r.text
            assert 0 < r.json()["error"]["retry_after_ms"] <= 60_000 and "user" not in r.json()["error"]
        for user in ("x", "y", "z"):
            assert node.call("GET", "/v1/channels", user).json() == {"channels": [], "next_cursor": None}
        assert node.call("POST", "/v1/dms", "mallory", json={"user": "k"}).status_code == 200  # reopening adds nobody
        # Joining, creating alone and the group's own members adding people are not mallory's budget.
        assert node.call("POST", f"/v1/channels/{room}/members", "x", json={}).json()["result"] == "added"
        assert node.call("POST", "/v1/channels", "mallory", json={"kind": "group", "name": "alone"}).status_code == 201
        assert node.call("POST", f"/v1/channels/{group}/members", "a", json={"user": "i"}).json()["result"] == "added"


def test_a_request_adding_more_than_the_burst_is_a_bad_request(tmp_path: Path) -> None:
    for node in make_node(tmp_path, CHAT_GROUP_MAX_MEMBERS="10", CHAT_ADD_OTHERS_BURST="12"):
        r = node.call("POST", "/v1/channels", "mallory", json={"kind": "room", "name": "r", "members": [f"u{i}" for i in range(13)]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
        assert node.call("POST", "/v1/channels", "mallory", json={"kind": "room", "name": "r", "members": [f"u{i}" for i in range(12)]}).status_code == 201


def test_each_user_has_a_daily_budget_of_adds_by_others(tmp_path: Path) -> None:
    for node in make_node(tmp_path, CHAT_ADDED_BY_OTHERS_PER_DAY="3"):
        for adder in ("a1", "a2", "a3"):
            assert node.call("POST", "/v1/dms", adder, json={"user": "vic"}).status_code == 201
        for adder in ("a4", "a5"):
            r = node.call("POST", "/v1/channels", adder, json={"kind": "group", "name": "g", "members": ["vic", "other"]})
            assert r.status_code == 429 and r.json()["error"]["user"] == "vic", r.text
            # a day's budget of 3: one more after 86,400 s / 3
            assert 28_000_000 < r.json()["error"]["retry_after_ms"] <= 28_800_001
        assert node.call("GET", "/v1/channels", "other").json()["channels"] == []  # refused whole: nothing stored
        assert node.call("POST", "/v1/dms", "a1", json={"user": "vic"}).status_code == 200  # an existing DM still opens
        assert node.call("POST", "/v1/dms", "a4", json={"user": "vic"}).status_code == 429
        assert node.call("POST", "/v1/channels", "vic", json={"kind": "room", "name": "mine"}).status_code == 201  # vic's own


def test_the_default_page_is_the_whole_list_of_today(node: Node) -> None:
    made = [node.channel("alice") for _ in range(3)]
    body = node.call("GET", "/v1/channels", "alice").json()
    assert [c["id"] for c in body["channels"]] == made[::-1] and body["next_cursor"] is None
    first = node.call("GET", "/v1/channels", "alice", params={"limit": "2"}).json()
    assert [c["id"] for c in first["channels"]] == made[:0:-1] and first["next_cursor"] == made[1]
    rest = node.call("GET", "/v1/channels", "alice", params={"limit": "2", "cursor": first["next_cursor"]}).json()
    assert [c["id"] for c in rest["channels"]] == [made[0]] and rest["next_cursor"] is None
    for query in ({"limit": "0"}, {"limit": "1001"}, {"cursor": "x"}, {"cursor": "-5"}):
        r = node.call("GET", "/v1/channels", "alice", params=query)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", query
