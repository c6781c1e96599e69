"""``GET /v1/ops/nodes`` on a two-node cluster discovered through a real ZooKeeper: either node
lists both, with their load, draining flag, start time and version, and marks itself."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import services
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.zookeeper, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    tmp = tmp_path_factory.mktemp("opscluster")
    hosts = f"{services.ZOOKEEPER_HOSTS}/chat-ops-{secrets.token_hex(4)}"
    env = {"CHAT_ZOOKEEPER_HOSTS": hosts, "CHAT_ZOOKEEPER_SESSION_TIMEOUT_S": "4"}
    nodes = [ServerProcess(tmp / f"n{i}", env={**env, "CHAT_NODE_ID": f"ops-node-{i}"}).start(60) for i in range(2)]
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
