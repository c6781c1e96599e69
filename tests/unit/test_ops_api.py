"""The operators' API in process: admins only, every config change validated, the node list, the
dashboard's stream and page, and hot rooms pinned and released through the node's protection."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from chat import ops_events
from chat.app import create_app
from chat.config import from_env
from chat.errors import RateLimited
from chat.models import Principal
from tests.unit.conftest import Node


def test_only_admins_reach_the_ops_api(node: Node) -> None:
    assert node.call("GET", "/v1/ops/config").status_code == 401
    r = node.call("GET", "/v1/ops/config", "alice")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    admin = {"Authorization": f"Bearer {node.token('root', roles=('admin',))}"}
    r = node.call("GET", "/v1/ops/config", headers=admin)
    assert r.status_code == 200 and isinstance(r.json()["config"], dict)


def test_an_unknown_key_is_refused_with_the_reason_and_nothing_applies(node: Node) -> None:
    admin = {"Authorization": f"Bearer {node.token('root', roles=('admin',))}"}
    before = node.call("GET", "/v1/ops/config", headers=admin).json()
    r = node.call("PUT", "/v1/ops/config", headers=admin, json={"no_such_setting": 1})
    assert r.status_code == 400 and "no_such_setting" in r.json()["error"]["message"]
    assert node.call("GET", "/v1/ops/config", headers=admin).json() == before
    assert node.call("PUT", "/v1/ops/config", headers=admin, content=b"[1]").status_code == 400


def admin_headers(node: Node) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.token('root', roles=('admin',))}"}


OPS_ENDPOINTS = [
    ("GET", "/v1/ops/config"),
    ("PUT", "/v1/ops/config"),
    ("GET", "/v1/ops/nodes"),
    ("GET", "/v1/ops/hot-rooms"),
    ("POST", "/v1/ops/rooms/1/throttle"),
    ("GET", "/v1/ops/events"),
]


@pytest.mark.parametrize(("method", "path"), OPS_ENDPOINTS)
def test_every_ops_endpoint_refuses_non_admins(node: Node, method: str, path: str) -> None:
    assert node.call(method, path).status_code == 401
    r = node.call(method, path, "alice", json={})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    bot = {"Authorization": f"Bearer {node.token('robot', roles=('bot',))}"}
    assert node.call(method, path, headers=bot, json={}).status_code == 403


def test_nodes_lists_this_node_with_its_load_and_readiness(node: Node) -> None:
    with node.client.websocket_connect(f"/v1/ws?token={node.token('alice')}") as ws:
        ws.receive_json()
        body = node.call("GET", "/v1/ops/nodes", headers=admin_headers(node)).json()
    (me,) = body["nodes"]
    assert me["node_id"] == "inproc" and me["this"] is True
    assert me["connections"] == 1 and me["capacity"] == 10_000 and me["draining"] is False
    assert me["url"].endswith("/v1/ws") and me["version"] and me["started_at"] > 1_700_000_000_000
    assert body["this_node"] == {"node_id": "inproc", "ready": True, "failing": {}}


def hot_rooms(node: Node) -> dict[str, dict[str, Any]]:
    r = node.call("GET", "/v1/ops/hot-rooms", headers=admin_headers(node))
    assert r.status_code == 200
    return {room["channel"]: room for room in r.json()["rooms"]}


def test_an_admin_pins_a_room_hot_and_releases_it(node: Node) -> None:
    admin = admin_headers(node)
    room = node.channel("alice", ["bob"], kind="room")
    assert hot_rooms(node) == {}  # a quiet node watches nothing
    r = node.call("POST", f"/v1/ops/rooms/{room}/throttle", headers=admin, json={"pin": True})
    assert r.status_code == 200 and r.json() == {"channel": room, "pin": True}
    shown = hot_rooms(node)[room]
    assert shown["hot"] is True and shown["pinned"] is True and shown["hot_since"] > 1_700_000_000_000
    assert {"send_per_s", "fanout_per_s", "fetch_per_s", "join_per_s", "members", "online", "throttled"} <= set(shown)
    # Member and online counts are read off the request's path: there within a few reads.
    for _ in range(200):
        if hot_rooms(node)[room]["members"] is not None:
            break
    assert hot_rooms(node)[room]["members"] == 2 and hot_rooms(node)[room]["online"] == 0
    # In force: the protection treats the room as hot (its sends go through the hot lane and limits).
    assert node.client.app.state.parts.protection.rooms.protected(int(room))  # type: ignore[attr-defined]
    assert node.call("POST", f"/v1/ops/rooms/{room}/throttle", headers=admin, json={"pin": False}).status_code == 200
    assert hot_rooms(node)[room]["hot"] is False and hot_rooms(node)[room]["pinned"] is False
    assert node.call("POST", f"/v1/ops/rooms/{room}/throttle", headers=admin, json={"pin": None}).json()["pin"] is None
    assert hot_rooms(node).get(room, {"pinned": None})["pinned"] is None  # back to its rates
    assert not node.client.app.state.parts.protection.rooms.protected(int(room))  # type: ignore[attr-defined]


@pytest.mark.parametrize("body", [b"{}", b'{"pin": "yes"}', b'{"pin": 1}', b'{"pin": true, "for_s": 60}', b"[true]", b"not json"])
def test_a_bad_throttle_body_is_refused_with_the_reason(node: Node, body: bytes) -> None:
    room = node.channel("alice", kind="room")
    r = node.call("POST", f"/v1/ops/rooms/{room}/throttle", headers=admin_headers(node), content=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request" and r.json()["error"]["message"]
    assert hot_rooms(node) == {}  # nothing pinned


def test_only_existing_rooms_can_be_pinned(node: Node) -> None:
    admin = admin_headers(node)
    group = node.channel("alice", ["bob"])
    r = node.call("POST", f"/v1/ops/rooms/{group}/throttle", headers=admin, json={"pin": True})
    assert r.status_code == 400 and "only rooms" in r.json()["error"]["message"]
    assert node.call("POST", "/v1/ops/rooms/4242/throttle", headers=admin, json={"pin": True}).status_code == 404
    assert node.call("POST", "/v1/ops/rooms/not-an-id/throttle", headers=admin, json={"pin": True}).status_code == 404


def test_config_lists_each_setting_with_its_bounds_and_validates_changes(node: Node) -> None:
    admin = admin_headers(node)
    body = node.call("GET", "/v1/ops/config", headers=admin).json()
    assert body["config"]["hot_send_per_s"] == 50.0 and body["config"]["hot_coalescing"] is True
    send = next(s for s in body["settings"] if s["key"] == "hot_send_per_s")
    assert send == {
        "key": "hot_send_per_s",
        "type": "float",
        "default": 50.0,
        "minimum": 0.1,
        "maximum": 1e6,
        "choices": None,
        "doc": "messages/s sent to a room, cluster-wide, that make it hot",
    }
    # A bad value and a good one together: 400 naming the bad one, and nothing applied.
    r = node.call("PUT", "/v1/ops/config", headers=admin, json={"hot_send_per_s": -1, "hot_cool_s": 10})
    assert r.status_code == 400 and "hot_send_per_s" in r.json()["error"]["message"] and "at least 0.1" in r.json()["error"]["message"]
    assert node.call("GET", "/v1/ops/config", headers=admin).json()["config"]["hot_cool_s"] == 30.0
    for bad in ({"hot_room_join_per_s": 1.5}, {"hot_cool_s": "10"}, {"hot_send_per_s": True}, {"hot_coalescing": 1}):
        assert node.call("PUT", "/v1/ops/config", headers=admin, json=bad).status_code == 400, bad
    r = node.call("PUT", "/v1/ops/config", headers=admin, json={"lane_bot_weight": 1000})  # each fine alone, not together
    assert r.status_code == 400 and "lane_" in r.json()["error"]["message"]
    r = node.call("PUT", "/v1/ops/config", headers=admin, json={"hot_send_per_s": 5, "hot_cool_s": 10})
    assert r.status_code == 200 and {k: r.json()["config"][k] for k in ("hot_send_per_s", "hot_cool_s")} == {"hot_send_per_s": 5.0, "hot_cool_s": 10.0}
    # Applied on this node at once: the detector judges by the new threshold.
    assert node.client.app.state.parts.protection.rooms.detector.thresholds.hot_send_per_s == 5.0  # type: ignore[attr-defined]
    r = node.call("PUT", "/v1/ops/config", headers=admin, json={"hot_send_per_s": None})
    assert r.json()["config"]["hot_send_per_s"] == 50.0  # null: back to the default


def test_the_event_stream_sends_snapshots_and_then_ends(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops_events, "INTERVAL_S", 0.01)
    monkeypatch.setattr(ops_events, "MAX_STREAM_S", 0.2)  # the test client reads a stream to its end
    r = node.call("GET", "/v1/ops/events", headers=admin_headers(node))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [chunk for chunk in r.text.split("\n\n") if chunk]
    assert len(events) >= 2
    kind, data = events[0].split("\n")
    assert kind == "event: snapshot"
    snapshot = orjson.loads(data.removeprefix("data: "))
    assert snapshot["node_id"] == "inproc" and snapshot["cluster"]["nodes"][0]["node_id"] == "inproc"
    assert snapshot["rooms"] == [] and snapshot["breakers"] == []  # nothing hot; an embedded node has no breakers
    assert set(snapshot["stats"]) >= {"connections", "messages_stored", "deliveries", "resyncs", "loop_lag_ms"}


async def test_streams_are_bounded_per_admin_and_per_node(monkeypatch: pytest.MonkeyPatch) -> None:
    async def snapshot() -> dict[str, object]:
        return {}

    events = ops_events.OpsEvents(admin=lambda request: Principal(user=request, roles=frozenset({"admin"})), snapshot=snapshot)  # type: ignore[arg-type, return-value]
    held = [await events.stream("ops") for _ in range(ops_events.MAX_STREAMS_PER_USER)]  # type: ignore[arg-type]
    with pytest.raises(RateLimited):
        await events.stream("ops")  # type: ignore[arg-type]
    monkeypatch.setattr(ops_events, "MAX_STREAMS", ops_events.MAX_STREAMS_PER_USER + 1)
    await events.stream("other")  # type: ignore[arg-type]
    with pytest.raises(RateLimited):
        await events.stream("third")  # type: ignore[arg-type]
    assert events.open_streams == len(held) + 1


def test_an_admin_signs_in_by_name_only_on_a_development_node_from_this_machine(tmp_path: Path) -> None:
    settings = from_env({"CHAT_JWT_SECRET": "", "CHAT_DATA_DIR": str(tmp_path), "CHAT_NODE_ID": "dev"})
    assert settings.dev_login_enabled
    app = create_app(settings)
    with TestClient(app, client=("127.0.0.1", 40000)) as local:
        token = local.post("/v1/dev/token", json={"user": "ops", "admin": True}).json()["token"]
        assert local.get("/v1/ops/nodes", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        plain = local.post("/v1/dev/token", json={"user": "ops"}).json()["token"]
        assert local.get("/v1/ops/nodes", headers={"Authorization": f"Bearer {plain}"}).status_code == 403
        assert local.post("/v1/dev/token", json={"user": "ops", "admin": "yes"}).status_code == 400
    with TestClient(create_app(settings), client=("192.0.2.7", 40000)) as remote:
        r = remote.post("/v1/dev/token", json={"user": "ops", "admin": True})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert remote.post("/v1/dev/token", json={"user": "ops"}).status_code == 200


def test_the_dashboard_page_is_served_and_its_assets_fit_the_content_security_policy(node: Node) -> None:
    r = node.client.get("/ops")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "<script" in r.text and "/static/ops.js" in r.text and "/static/ops.css" in r.text
    assert "'unsafe-inline'" not in r.headers["content-security-policy"]
    # No inline script or style: the policy allows only the node's own files.
    assert re.search(r"<script(?![^>]*\bsrc=)", r.text) is None and "<style" not in r.text and " style=" not in r.text
    for asset in ("/static/ops.js", "/static/ops.css"):
        assert node.client.get(asset).status_code == 200
