"""The ops API on a real two-node cluster (Cassandra, Redis, ZooKeeper): either node lists both,
with their load, draining flag, start time and version, and marks itself; a room pinned through
one node is protected on both, and released through the other; a threshold set through one
applies on both; each node shows its breakers in front of Cassandra and Redis."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.test_cluster import make_channel, node
from tests.support import services
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.cassandra, pytest.mark.redis, pytest.mark.zookeeper, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    tmp = tmp_path_factory.mktemp("opscluster")
    hosts = f"{services.ZOOKEEPER_HOSTS}/chat-ops-{secrets.token_hex(4)}"
    env = {"CHAT_ZOOKEEPER_HOSTS": hosts, "CHAT_ZOOKEEPER_SESSION_TIMEOUT_S": "4"}
    nodes = [node(tmp, 71 + i, **env, CHAT_NODE_ID=f"ops-node-{i}").start(90) for i in range(2)]
    yield nodes
    for n in nodes:
        n.kill()


def listed(server: ServerProcess, *, wanted: int, timeout_s: float = 20) -> dict[str, Any]:
    """The node list once it holds ``wanted`` nodes (the other's registration is watched, not instant)."""
    headers = {"Authorization": f"Bearer {server.token('root', roles=('admin',))}"}
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=server.http_url, headers=headers, timeout=10) as http:
        while True:
            r = http.get("/v1/ops/nodes")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            if len(body["nodes"]) == wanted or time.monotonic() > deadline:
                return body
            time.sleep(0.2)  # polling an HTTP answer from outside: there is no event to wait on


def admin(server: ServerProcess) -> httpx.Client:
    return server.http(token=server.token("root", roles=("admin",)))


def answer(server: ServerProcess, path: str, done: Callable[[dict[str, Any]], bool], timeout_s: float = 10) -> dict[str, Any]:
    """``GET path`` on ``server`` until ``done`` holds for its answer (bounded; the last answer is returned)."""
    deadline = time.monotonic() + timeout_s
    with admin(server) as http:
        while True:
            r = http.get(path)
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            if done(body) or time.monotonic() > deadline:
                return body
            time.sleep(0.1)  # polling an HTTP answer from outside: there is no event to wait on


def room_state(body: dict[str, Any], room: str) -> dict[str, Any] | None:
    return next((r for r in body["rooms"] if r["channel"] == room), None)


def test_a_room_pinned_through_one_node_is_protected_on_both_and_released_through_the_other(pair: list[ServerProcess]) -> None:
    a, b = pair
    room = make_channel(a, "ops-owner", "room", ["ops-member"])
    with a.http("ops-owner") as owner:  # not an admin
        r = owner.post(f"/v1/ops/rooms/{room}/throttle", json={"pin": True})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    with admin(a) as http:
        assert http.post(f"/v1/ops/rooms/{room}/throttle", json={"pin": "on"}).status_code == 400
        r = http.post(f"/v1/ops/rooms/{room}/throttle", json={"pin": True})
        assert r.status_code == 200, r.text
    for server in pair:
        shown = room_state(answer(server, "/v1/ops/hot-rooms", lambda body: (room_state(body, room) or {}).get("hot") is True), room)
        assert shown is not None and shown["hot"] is True and shown["pinned"] is True, (server.env["CHAT_NODE_ID"], shown)
        assert shown["hot_since"] > 1_700_000_000_000
    with admin(b) as http:
        assert http.post(f"/v1/ops/rooms/{room}/throttle", json={"pin": None}).status_code == 200
    for server in pair:
        body = answer(server, "/v1/ops/hot-rooms", lambda body: (room_state(body, room) or {}).get("pinned") is None)
        assert (room_state(body, room) or {}).get("pinned") is None


def test_a_threshold_set_through_one_node_applies_on_both(pair: list[ServerProcess]) -> None:
    a, b = pair
    with admin(a) as http:
        before = http.get("/v1/ops/config").json()["config"]["hot_fetch_per_s"]
        r = http.put("/v1/ops/config", json={"hot_fetch_per_s": 12.5, "hot_cool_s": -1})
        assert r.status_code == 400 and "hot_cool_s" in r.json()["error"]["message"]  # nothing applied
        assert http.put("/v1/ops/config", json={"hot_fetch_per_s": 12.5}).status_code == 200
    try:
        body = answer(b, "/v1/ops/config", lambda body: body["config"]["hot_fetch_per_s"] == 12.5, timeout_s=5)
        assert body["config"]["hot_fetch_per_s"] == 12.5 and body["config"]["hot_cool_s"] == 30.0
    finally:
        with admin(b) as http:
            assert http.put("/v1/ops/config", json={"hot_fetch_per_s": before}).status_code == 200


def test_each_node_shows_its_breakers(pair: list[ServerProcess]) -> None:
    for server in pair:
        with admin(server) as http, http.stream("GET", "/v1/ops/events") as stream:
            first = next(line for line in stream.iter_lines() if line.startswith("data: "))
        breakers = {b["name"]: b for b in orjson.loads(first.removeprefix("data: "))["breakers"]}
        assert set(breakers) == {"cassandra", "redis"} and {b["state"] for b in breakers.values()} == {"healthy"}
        with admin(server) as http:
            metrics = http.get("/metrics").text
        assert 'chat_breaker_state{breaker="cassandra",state="healthy"} 1.0' in metrics


def test_either_node_lists_both_and_marks_itself(pair: list[ServerProcess]) -> None:
    with httpx.Client(base_url=pair[1].http_url, timeout=10) as http:
        assert http.get("/v1/ops/nodes", headers={"Authorization": f"Bearer {pair[1].token('alice')}"}).status_code == 403
    for server in pair:
        body = listed(server, wanted=2)
        nodes = {n["node_id"]: n for n in body["nodes"]}
        assert set(nodes) == {"ops-node-0", "ops-node-1"}
        me = server.env["CHAT_NODE_ID"]
        assert [n["node_id"] for n in body["nodes"] if n["this"]] == [me]
        for n in nodes.values():
            port = pair[int(n["node_id"][-1])].port
            assert n["url"] == f"ws://127.0.0.1:{port}/v1/ws"
            assert n["capacity"] == 10_000 and n["draining"] is False and n["connections"] == 0
            assert n["version"] and n["started_at"] > 1_700_000_000_000
        assert body["this_node"]["node_id"] == me and body["this_node"]["ready"] is True
        assert body["view_age_s"] == 0


def test_a_node_that_leaves_is_dropped_from_the_list(pair: list[ServerProcess], tmp_path: Path) -> None:
    hosts = pair[0].env["CHAT_ZOOKEEPER_HOSTS"]
    third = ServerProcess(tmp_path / "n2", env={"CHAT_ZOOKEEPER_HOSTS": hosts, "CHAT_NODE_ID": "ops-node-2"}).start(60)
    try:
        assert {n["node_id"] for n in listed(pair[0], wanted=3)["nodes"]} == {"ops-node-0", "ops-node-1", "ops-node-2"}
    finally:
        assert third.terminate() == 0  # drains and deregisters at once
    assert {n["node_id"] for n in listed(pair[0], wanted=2)["nodes"]} == {"ops-node-0", "ops-node-1"}
