"""PROTOCOL.md, HTTP API section, row by row, against a real ``chat serve`` process."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from chat.ids import EPOCH_MS, TIMESTAMP_SHIFT
from tests.support.server import ServerProcess

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    429: "rate_limited",
}


def uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The protocol's error body with the right status and code."""
    assert response.status_code == status, f"{response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == (code or ERROR_CODES[status]), body
    assert isinstance(error["message"], str) and error["message"], body
    if status not in (429, 503):
        assert "retry_after_ms" not in error
    return error


def create(http: httpx.Client, kind: str = "group", members: list[str] | None = None, name: str = "chan") -> dict[str, Any]:
    r = http.post("/v1/channels", json={"kind": kind, "name": name, "members": members or []})
    assert r.status_code == 201, r.text
    return r.json()["channel"]


# Health


def test_healthz_and_readyz(server: ServerProcess) -> None:
    with server.http() as http:
        r = http.get("/healthz")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        r = http.get("/readyz")
        assert r.status_code == 200, r.text


# Channels


def test_create_group_and_room_the_creator_is_a_member(server: ServerProcess) -> None:
    alice, bob = uid("alice"), uid("bob")
    with server.http(alice) as http:
        r = http.post("/v1/channels", json={"kind": "group", "name": "team", "members": [bob]})
        assert r.status_code == 201
        group = r.json()["channel"]
        assert isinstance(group["id"], str) and group["id"].isdigit()
        assert group["kind"] == "group" and group["name"] == "team"
        assert sorted(group["members"]) == sorted([alice, bob])
        room = create(http, "room", name="lobby")
        assert room["kind"] == "room" and room["name"] == "lobby" and room["id"] != group["id"]
        for channel in (group, room):
            r = http.get(f"/v1/channels/{channel['id']}")
            assert r.status_code == 200
            assert r.json()["channel"]["id"] == channel["id"]
            assert r.json()["channel"]["kind"] == channel["kind"]
        # The creator can use them at once.
        r = http.post(f"/v1/channels/{room['id']}/messages", json={"text": "first", "client_msg_id": "c1"})
        assert r.status_code == 201
    with server.http(bob) as http:
        assert http.get(f"/v1/channels/{group['id']}").status_code == 200


def test_create_channel_rejects_bad_input(server: ServerProcess) -> None:
    with server.http(uid("alice")) as http:
        for body in (
            {"kind": "dm", "name": "x"},
            {"kind": "castle", "name": "x"},
            {"name": "no kind"},
            {"kind": "group", "name": ""},
            {"kind": "group", "name": 5},
            {"kind": "group", "name": "x", "members": "bob"},
            {"kind": "group", "name": "x", "members": ["not a user"]},
        ):
            assert_error(http.post("/v1/channels", json=body), 400)
        # Unknown fields are ignored.
        assert http.post("/v1/channels", json={"kind": "room", "name": "x", "topic": "later"}).status_code == 201


def test_group_member_limit(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.env["CHAT_GROUP_MAX_MEMBERS"] = "3"
    server.start()
    alice, bob, carol, dave = (uid(n) for n in ("alice", "bob", "carol", "dave"))
    with server.http(alice) as http:
        group = create(http, members=[bob])
        assert http.post(f"/v1/channels/{group['id']}/members", json={"user": carol}).status_code == 200
        error = assert_error(http.post(f"/v1/channels/{group['id']}/members", json={"user": dave}), 403, "forbidden")
        assert "full" in error["message"].lower()
        assert len(http.get(f"/v1/channels/{group['id']}").json()["channel"]["members"]) == 3
        assert_error(http.post("/v1/channels", json={"kind": "group", "name": "big", "members": [bob, carol, dave]}), 403)
        # Rooms are unbounded.
        room = create(http, "room", members=[bob, carol, dave])
        assert http.post(f"/v1/channels/{room['id']}/members", json={"user": uid("eve")}).status_code == 200
    with server.http(dave) as http:
        assert_error(http.get(f"/v1/channels/{group['id']}"), 403)


def test_dm_is_one_channel_per_pair(server: ServerProcess) -> None:
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    with server.http(alice) as http:
        r = http.post("/v1/dms", json={"user": bob})
        assert r.status_code in (200, 201)
        dm = r.json()["channel"]
        assert dm["kind"] == "dm" and sorted(dm["members"]) == sorted([alice, bob])
        again = http.post("/v1/dms", json={"user": bob})
        assert again.status_code in (200, 201) and again.json()["channel"]["id"] == dm["id"]
        other = http.post("/v1/dms", json={"user": carol}).json()["channel"]
        assert other["id"] != dm["id"]
        assert_error(http.post("/v1/dms", json={"user": alice}), 400)
        assert_error(http.post("/v1/dms", json={"user": "not a user"}), 400)
        assert_error(http.post("/v1/dms", json={}), 400)
    with server.http(bob) as http:
        r = http.post("/v1/dms", json={"user": alice})
        assert r.status_code in (200, 201) and r.json()["channel"]["id"] == dm["id"]
        assert http.get(f"/v1/channels/{dm['id']}").json()["channel"]["kind"] == "dm"
    with server.http(carol) as http:
        assert_error(http.get(f"/v1/channels/{dm['id']}"), 403)


def test_get_channel_is_for_members_only(server: ServerProcess) -> None:
    alice, mallory = uid("alice"), uid("mallory")
    with server.http(alice) as http:
        group = create(http)
        room = create(http, "room")
        r = http.get(f"/v1/channels/{group['id']}")
        assert r.status_code == 200
        channel = r.json()["channel"]
        assert channel["id"] == group["id"] and channel["kind"] == "group" and channel["members"] == [alice]
        assert_error(http.get("/v1/channels/123456789"), 404)
        assert_error(http.get("/v1/channels/not-an-id"), 404)
    with server.http(mallory) as http:
        assert_error(http.get(f"/v1/channels/{group['id']}"), 403)
        assert_error(http.get(f"/v1/channels/{room['id']}"), 403)
        assert_error(http.get(f"/v1/channels/{group['id']}/messages"), 403)
        assert_error(http.post(f"/v1/channels/{group['id']}/messages", json={"text": "x", "client_msg_id": "c"}), 403)


def test_adding_members(server: ServerProcess) -> None:
    alice, bob, carol, dave, eve = (uid(n) for n in ("alice", "bob", "carol", "dave", "eve"))
    with server.http(alice) as http:
        group = create(http, members=[bob])
        room = create(http, "room")
        dm = http.post("/v1/dms", json={"user": bob}).json()["channel"]
    with server.http(bob) as http:
        # Any member of a group may add members (not only its creator).
        assert http.post(f"/v1/channels/{group['id']}/members", json={"user": carol}).status_code == 200
        assert_error(http.post(f"/v1/channels/{dm['id']}/members", json={"user": carol}), 403)
        assert_error(http.post("/v1/channels/123456789/members", json={"user": carol}), 404)
        assert_error(http.post(f"/v1/channels/{group['id']}/members", json={"user": "not a user"}), 400)
    with server.http(carol) as http:
        assert http.get(f"/v1/channels/{group['id']}").status_code == 200
    with server.http(dave) as http:
        # A non-member can neither add others nor themselves to a group.
        assert_error(http.post(f"/v1/channels/{group['id']}/members", json={"user": eve}), 403)
        assert_error(http.post(f"/v1/channels/{group['id']}/members"), 403)
        assert_error(http.post(f"/v1/channels/{group['id']}/members", json={"user": dave}), 403)
        # Anyone may join a room (body omitted: join yourself).
        assert http.post(f"/v1/channels/{room['id']}/members").status_code == 200
        assert http.get(f"/v1/channels/{room['id']}").status_code == 200
        assert http.post(f"/v1/channels/{room['id']}/messages", json={"text": "hi", "client_msg_id": "c"}).status_code == 201
        assert_error(http.post(f"/v1/channels/{dm['id']}/members"), 403)
    with server.http(eve) as http:
        assert_error(http.get(f"/v1/channels/{group['id']}"), 403)
        assert http.post(f"/v1/channels/{room['id']}/members", json={"user": eve}).status_code == 200
    with server.http(alice) as http:
        assert sorted(http.get(f"/v1/channels/{group['id']}").json()["channel"]["members"]) == sorted([alice, bob, carol])


def test_removing_members(server: ServerProcess) -> None:
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    with server.http(alice) as http:
        group = create(http, members=[bob, carol])
        dm = http.post("/v1/dms", json={"user": bob}).json()["channel"]
    gid = group["id"]
    with server.http(bob) as http:
        # A non-creator cannot remove others.
        assert_error(http.delete(f"/v1/channels/{gid}/members/{carol}"), 403)
        assert_error(http.delete(f"/v1/channels/{dm['id']}/members/{bob}"), 403)
    with server.http(alice) as http:
        # The creator may remove others.
        r = http.delete(f"/v1/channels/{gid}/members/{carol}")
        assert r.status_code == 204 and r.content == b""
    with server.http(carol) as http:
        assert_error(http.get(f"/v1/channels/{gid}"), 403)
        assert_error(http.post(f"/v1/channels/{gid}/messages", json={"text": "x", "client_msg_id": "c"}), 403)
    with server.http(bob) as http:
        # A member may leave.
        assert http.delete(f"/v1/channels/{gid}/members/{bob}").status_code == 204
        assert_error(http.get(f"/v1/channels/{gid}"), 403)
    with server.http(alice) as http:
        assert http.get(f"/v1/channels/{gid}").json()["channel"]["members"] == [alice]
        assert_error(http.delete(f"/v1/channels/123456789/members/{bob}"), 404)


# Messages


def test_post_message_then_idempotent_retry(server: ServerProcess) -> None:
    alice, bob = uid("alice"), uid("bob")
    with server.http(alice) as http:
        cid = create(http, members=[bob])["id"]
        r = http.post(f"/v1/channels/{cid}/messages", json={"text": "hello", "client_msg_id": "c-1"})
        assert r.status_code == 201
        message = r.json()["message"]
        assert message["channel"] == cid and message["sender"] == alice and message["text"] == "hello"
        assert message["client_msg_id"] == "c-1" and message["id"].isdigit()
        assert message["ts"] == (int(message["id"]) >> TIMESTAMP_SHIFT) + EPOCH_MS
        retry = http.post(f"/v1/channels/{cid}/messages", json={"text": "changed", "client_msg_id": "c-1"})
        assert retry.status_code == 200 and retry.json()["message"] == message
        assert http.get(f"/v1/channels/{cid}/messages").json()["messages"] == [message]
        # Validation
        path = f"/v1/channels/{cid}/messages"
        assert_error(http.post(path, json={"client_msg_id": "c"}), 400)
        assert_error(http.post(path, json={"text": "", "client_msg_id": "c"}), 400)
        assert_error(http.post(path, json={"text": 3, "client_msg_id": "c"}), 400)
        assert_error(http.post(path, json={"text": "x"}), 400)
        assert_error(http.post(path, json={"text": "x", "client_msg_id": "c" * 65}), 400)
        assert_error(http.post(path, json={"text": "x" * 100_001, "client_msg_id": "c"}), 413, "too_large")
        r = http.post(path, json={"text": "x" * 100_000, "client_msg_id": "c" * 64})
        assert r.status_code == 201 and len(r.json()["message"]["text"]) == 100_000
        # A maximal message fits even with every character JSON-escaped (12 bytes per code point).
        escaped = ('{"client_msg_id": "esc", "text": "%s"}' % ("\\ud83d\\ude00" * 100_000)).encode()
        r = http.post(path, content=escaped, headers={"content-type": "application/json"})
        assert r.status_code == 201 and r.json()["message"]["text"] == "😀" * 100_000
        assert_error(http.post("/v1/channels/123456789/messages", json={"text": "x", "client_msg_id": "c"}), 404)


def test_get_messages_paging(server: ServerProcess) -> None:
    alice = uid("alice")
    with server.http(alice) as http:
        cid = create(http)["id"]
        ids = []
        for i in range(7):
            r = http.post(f"/v1/channels/{cid}/messages", json={"text": f"m{i}", "client_msg_id": f"c{i}"})
            ids.append(r.json()["message"]["id"])

        def page(**params: Any) -> tuple[list[str], bool]:
            r = http.get(f"/v1/channels/{cid}/messages", params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            return [m["id"] for m in body["messages"]], body["has_more"]

        assert page() == (ids, False)
        assert page(limit=3) == (ids[4:], True)
        assert page(limit=7) == (ids, False)
        assert page(before=ids[4], limit=2) == (ids[2:4], True)
        assert page(before=ids[2], limit=2) == (ids[:2], False)
        assert page(after=ids[1], limit=2) == (ids[2:4], True)
        assert page(after=ids[4], limit=2) == (ids[5:], False)
        assert page(after=ids[1], before=ids[5], limit=2) == (ids[2:4], True)
        assert page(after=ids[1], before=ids[5], limit=50)[0] == ids[2:5]
        assert page(limit=200) == (ids, False)
        for params in ({"limit": 0}, {"limit": 201}, {"limit": "x"}, {"limit": -1}, {"before": "abc"}, {"after": "1.5"}):
            assert_error(http.get(f"/v1/channels/{cid}/messages", params=params), 400)


def test_connect_assigns_a_node(server: ServerProcess) -> None:
    with server.http(uid("alice")) as http:
        r = http.get("/v1/connect")
    assert r.status_code == 200
    assert r.json() == {"url": server.ws_url, "node_id": server.env["CHAT_NODE_ID"]}


# Errors


def test_error_bodies(server: ServerProcess) -> None:
    alice = uid("alice")
    with server.http() as anonymous:
        assert_error(anonymous.get("/v1/connect"), 401)
        assert_error(anonymous.post("/v1/channels", json={"kind": "room", "name": "x"}), 401)
        assert_error(anonymous.get("/no/such/endpoint"), 404)
    with server.http(token="not-a-token") as bad:
        assert_error(bad.get("/v1/connect"), 401)
    with httpx.Client(base_url=server.http_url, headers={"Authorization": f"Basic {server.token(alice)}"}) as wrong_scheme:
        assert_error(wrong_scheme.get("/v1/connect"), 401)
    with server.http(alice) as http:
        assert_error(http.get("/v1/nothing-here"), 404)
        headers = {"content-type": "application/json"}
        assert_error(http.post("/v1/channels", content=b'{"kind": "room",', headers=headers), 400)
        assert_error(http.post("/v1/channels", content=b"[1, 2]", headers=headers), 400)
        assert_error(http.post("/v1/dms", content=b"\xff\xfe", headers=headers), 400)
        cid = create(http)["id"]
        huge = b'{"text": "' + b"x" * (2 * 1024 * 1024) + b'", "client_msg_id": "c"}'
        assert_error(http.post(f"/v1/channels/{cid}/messages", content=huge, headers=headers), 413, "too_large")
        # Without a Content-Length (chunked) the cap holds too.
        chunks = iter([b'{"text": "'] + [b"x" * 65536] * 32 + [b'", "client_msg_id": "c"}'])
        assert_error(http.post(f"/v1/channels/{cid}/messages", content=chunks, headers=headers), 413, "too_large")
        assert http.get(f"/v1/channels/{cid}/messages").json()["messages"] == []
        # The node is still fine.
        assert http.get("/v1/connect").status_code == 200


def test_rate_limited_requests_get_429_with_retry_after(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.env.update({"CHAT_RATE_PER_S": "0.5", "CHAT_RATE_BURST": "3"})
    server.start()
    alice, bob = uid("alice"), uid("bob")
    with server.http(alice) as http:
        statuses = [http.get("/v1/connect") for _ in range(5)]
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
    limited = statuses[3]
    error = assert_error(limited, 429, "rate_limited")
    assert isinstance(error["retry_after_ms"], int) and error["retry_after_ms"] > 0
    assert int(limited.headers["Retry-After"]) >= 1
    assert int(limited.headers["Retry-After"]) * 1000 >= error["retry_after_ms"]
    # Per user: another user is not affected.
    with server.http(bob) as http:
        assert http.get("/v1/connect").status_code == 200
