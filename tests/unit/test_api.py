"""PROTOCOL.md's HTTP API rows, in process (the e2e suite repeats the important ones against a
real ``chat serve``)."""

from __future__ import annotations

import pytest

from tests.unit.conftest import Node


def error_code(response: object) -> str:
    return response.json()["error"]["code"]  # type: ignore[attr-defined,no-any-return]


def test_health_and_readiness(node: Node) -> None:
    assert node.call("GET", "/healthz").json() == {"status": "ok"}
    r = node.call("GET", "/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}


def test_every_endpoint_wants_a_valid_token(node: Node) -> None:
    for method, path in (("GET", "/v1/channels"), ("POST", "/v1/channels"), ("GET", "/v1/connect"), ("POST", "/v1/dms")):
        r = node.call(method, path)
        assert r.status_code == 401 and error_code(r) == "unauthorized"
        r = node.call(method, path, headers={"Authorization": "Bearer nonsense"})
        assert r.status_code == 401


def test_create_group_get_it_and_list_it(node: Node) -> None:
    r = node.call("POST", "/v1/channels", "alice", json={"kind": "group", "name": " launch ", "members": ["bob", "bob"]})
    assert r.status_code == 201
    channel = r.json()["channel"]
    assert channel["kind"] == "group" and channel["name"] == "launch" and channel["members"] == ["alice", "bob"]
    got = node.call("GET", f"/v1/channels/{channel['id']}", "bob").json()["channel"]
    assert got["member_count"] == 2 and got["members"] == ["alice", "bob"]
    assert node.call("GET", f"/v1/channels/{channel['id']}", "carol").status_code == 403
    listed = node.call("GET", "/v1/channels", "bob").json()["channels"]
    assert [c["id"] for c in listed] == [channel["id"]] and listed[0]["last_read"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "dm", "name": "x"},
        {"kind": "group"},
        {"kind": "group", "name": ""},
        {"kind": "group", "name": "x" * 101},
        {"kind": "group", "name": 5},
        {"kind": "group", "name": "x", "members": "bob"},
        {"kind": "group", "name": "x", "members": ["bad user!"]},
    ],
)
def test_bad_channel_bodies_are_bad_requests(node: Node, body: dict[str, object]) -> None:
    r = node.call("POST", "/v1/channels", "alice", json=body)
    assert r.status_code == 400 and error_code(r) == "bad_request"


def test_bodies_must_be_json_objects_of_bounded_size(node: Node) -> None:
    assert error_code(node.call("POST", "/v1/channels", "alice", content=b"[1]")) == "bad_request"
    assert error_code(node.call("POST", "/v1/channels", "alice", content=b"{nope")) == "bad_request"
    r = node.call("POST", "/v1/channels", "alice", content=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert r.status_code == 413 and error_code(r) == "too_large"


def test_dms_are_one_per_pair(node: Node) -> None:
    first = node.call("POST", "/v1/dms", "alice", json={"user": "bob"})
    again = node.call("POST", "/v1/dms", "bob", json={"user": "alice"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["channel"]["id"] == again.json()["channel"]["id"]
    assert first.json()["channel"]["members"] == ["alice", "bob"]
    assert node.call("POST", "/v1/dms", "alice", json={"user": "alice"}).status_code == 400
    assert node.call("POST", "/v1/dms", "alice", json={"user": "no spaces"}).status_code == 400
    dm = first.json()["channel"]["id"]
    assert node.call("POST", f"/v1/channels/{dm}/members", "alice", json={"user": "carol"}).status_code == 403


def test_group_membership_rules(node: Node) -> None:
    group = node.channel("alice", ["bob"])
    assert node.call("POST", f"/v1/channels/{group}/members", "carol").status_code == 403  # invite-only
    r = node.call("POST", f"/v1/channels/{group}/members", "bob", json={"user": "carol"})
    assert r.json() == {"result": "added", "user": "carol"}
    assert node.call("POST", f"/v1/channels/{group}/members", "bob", json={"user": "carol"}).json()["result"] == "already"
    assert node.call("DELETE", f"/v1/channels/{group}/members/carol", "bob").status_code == 403  # only the creator
    assert node.call("DELETE", f"/v1/channels/{group}/members/carol", "alice").status_code == 204
    assert node.call("DELETE", f"/v1/channels/{group}/members/carol", "alice").status_code == 404
    assert node.call("DELETE", f"/v1/channels/{group}/members/bob", "bob").status_code == 204  # leaving


def test_groups_are_bounded(tmp_path: object) -> None:
    from tests.unit.conftest import make_node

    for small in make_node(tmp_path, CHAT_GROUP_MAX_MEMBERS="3"):  # type: ignore[arg-type]
        assert small.call("POST", "/v1/channels", "a", json={"kind": "group", "name": "g", "members": ["b", "c", "d"]}).status_code == 403
        group = small.channel("a", ["b", "c"])
        r = small.call("POST", f"/v1/channels/{group}/members", "a", json={"user": "d"})
        assert r.status_code == 403 and "full" in r.json()["error"]["message"]


def test_rooms_are_open_to_join(node: Node) -> None:
    room = node.channel("alice", kind="room")
    assert node.call("POST", f"/v1/channels/{room}/members", "zed").json()["result"] == "added"
    got = node.call("GET", f"/v1/channels/{room}", "zed").json()["channel"]
    assert "members" not in got and got["member_count"] == 2


def test_post_and_page_messages_with_idempotent_retries(node: Node) -> None:
    group = node.channel("alice", ["bob"])
    first = node.post("bob", group, "deploy finished", "deploy-42")
    retry = node.post("bob", group, "different text", "deploy-42")
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json()["message"] == first.json()["message"]
    message = first.json()["message"]
    assert set(message) >= {"id", "channel", "sender", "text", "ts", "client_msg_id"} and message["sender"] == "bob"
    ids = [first.json()["message"]["id"]] + [node.post("alice", group, f"m{i}", f"k{i}").json()["message"]["id"] for i in range(4)]
    page = node.call("GET", f"/v1/channels/{group}/messages?limit=2", "alice").json()
    assert [m["id"] for m in page["messages"]] == ids[-2:] and page["has_more"] is True
    page = node.call("GET", f"/v1/channels/{group}/messages?after={ids[0]}&before={ids[4]}", "alice").json()
    assert [m["id"] for m in page["messages"]] == ids[1:4] and page["has_more"] is False
    assert node.call("GET", f"/v1/channels/{group}/messages", "carol").status_code == 403
    assert node.call("GET", "/v1/channels/123456789/messages", "alice").status_code == 404
    assert node.call("GET", "/v1/channels/not-an-id/messages", "alice").status_code == 404


@pytest.mark.parametrize("limit", ["0", "201", "-1", "x", "²", "٥", "1" * 5000, "1.5"])
def test_bad_limits_are_bad_requests_never_500(node: Node, limit: str) -> None:
    group = node.channel("alice")
    r = node.call("GET", f"/v1/channels/{group}/messages", "alice", params={"limit": limit})
    assert r.status_code == 400 and error_code(r) == "bad_request"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"text": "", "client_msg_id": "k"}, 400, "bad_request"),
        ({"text": 5, "client_msg_id": "k"}, 400, "bad_request"),
        ({"text": "hi"}, 400, "bad_request"),
        ({"text": "hi", "client_msg_id": "k" * 65}, 400, "bad_request"),
        ({"text": "x" * 100_001, "client_msg_id": "k"}, 413, "too_large"),
    ],
)
def test_bad_messages_are_refused_and_nothing_is_stored(node: Node, body: dict[str, object], status: int, code: str) -> None:
    group = node.channel("alice")
    r = node.call("POST", f"/v1/channels/{group}/messages", "alice", json=body)
    assert r.status_code == status and error_code(r) == code
    assert node.call("GET", f"/v1/channels/{group}/messages", "alice").json()["messages"] == []


def test_a_maximal_message_is_stored(node: Node) -> None:
    group = node.channel("alice")
    r = node.post("alice", group, "🙂" * 100_000, "max")
    assert r.status_code == 201 and len(r.json()["message"]["text"]) == 100_000


def test_connect_assigns_this_node(node: Node) -> None:
    r = node.call("GET", "/v1/connect", "alice")
    assert r.status_code == 200 and r.json() == {"url": node.settings.ws_url, "node_id": "inproc"}


def test_http_rate_limit_carries_retry_after(tmp_path: object) -> None:
    from tests.unit.conftest import make_node

    for strict in make_node(tmp_path, CHAT_RATE_PER_S="1", CHAT_RATE_BURST="2"):  # type: ignore[arg-type]
        codes = [strict.call("GET", "/v1/channels", "alice").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = strict.call("GET", "/v1/channels", "alice")
        assert error_code(r) == "rate_limited" and r.json()["error"]["retry_after_ms"] > 0 and int(r.headers["Retry-After"]) >= 1


def test_unknown_endpoints_and_methods_answer_in_the_protocol_body(node: Node) -> None:
    r = node.call("GET", "/v1/nope")
    assert r.status_code == 404 and error_code(r) == "not_found"
    r = node.call("PUT", "/v1/channels", "alice")
    assert r.status_code == 405 and error_code(r) == "bad_request"
