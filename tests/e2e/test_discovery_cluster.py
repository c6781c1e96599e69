"""Discovery with real nodes on a real ZooKeeper (plus Cassandra and Redis): registration,
assignment from any node, a killed node leaving every view, and IDs that never collide while
ZooKeeper restarts or a node is frozen past its session."""

from __future__ import annotations

import collections
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat.ids import worker_of
from tests.e2e.test_cluster import make_channel, node
from tests.support import services
from tests.support.server import ServerProcess
from tests.support.zk_private import PrivateZooKeeper

pytestmark = [pytest.mark.cassandra, pytest.mark.redis, pytest.mark.zookeeper]

SESSION_S = 4  # the shared ZooKeeper's smallest session (2 ticks of 2 s)


def zk_node(tmp: Path, index: int, hosts: str, session_s: float = SESSION_S, **env: str) -> ServerProcess:
    return node(tmp, index, CHAT_ZOOKEEPER_HOSTS=hosts, CHAT_ZOOKEEPER_SESSION_TIMEOUT_S=str(session_s), **env)


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    tmp = tmp_path_factory.mktemp("discovery")
    hosts = f"{services.ZOOKEEPER_HOSTS}/chat-test-{secrets.token_hex(4)}"
    # Hand-outs count for a minute: longer than the 3,000-user loop, so no node's count drops
    # in the middle of it while another's has not yet (that would be timing, not assignment).
    nodes = [zk_node(tmp, 21 + i, hosts, CHAT_ASSIGN_PENDING_TTL_S="60").start(60) for i in range(3)]
    yield nodes
    for n in nodes:
        n.kill()


def assignments(server: ServerProcess, users: list[str]) -> dict[str, str]:
    out = {}
    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        for user in users:
            r = http.get("/v1/connect", headers={"Authorization": f"Bearer {server.token(user)}"})
            assert r.status_code == 200, r.text
            out[user] = r.json()["node_id"]
    return out


def wait_for_view(server: ServerProcess, node_ids: set[str], timeout: float) -> None:
    """Until /v1/connect hands out exactly ``node_ids`` for a sample of users (bounded)."""
    deadline = time.monotonic() + timeout
    sample = [f"probe-{i}" for i in range(60)]
    while True:
        seen = set(assignments(server, sample).values())
        if seen == node_ids:
            return
        assert time.monotonic() < deadline, f"{server.env['CHAT_NODE_ID']} still hands out {seen}, expected {node_ids}"
        time.sleep(0.2)  # polling an HTTP answer: no event to wait on from outside


def test_three_nodes_assign_3000_users_evenly_and_alike(trio: list[ServerProcess]) -> None:
    ids = {n.env["CHAT_NODE_ID"] for n in trio}
    for n in trio:
        wait_for_view(n, ids, 15)
    users = [f"user-{i:04d}" for i in range(3000)]
    # Each user asks every node in turn: at the same moment, with the same view, every node
    # must name the same node (each counts its own hand-outs, so they stay in step).
    clients = [httpx.Client(base_url=n.http_url, timeout=10) for n in trio]
    answers: dict[str, str] = {}
    try:
        for user in users:
            got = set()
            for server, http in zip(trio, clients, strict=True):
                r = http.get("/v1/connect", headers={"Authorization": f"Bearer {server.token(user)}"})
                assert r.status_code == 200, r.text
                got.add(r.json()["node_id"])
            assert len(got) == 1, f"{user} was sent to {got}: the same user must get the same node from any node"
            answers[user] = got.pop()
    finally:
        for http in clients:
            http.close()
    load = collections.Counter(answers.values())
    assert set(load) == ids
    assert max(load.values()) / (len(users) / len(ids)) <= 1.3, load


def test_a_killed_node_leaves_every_view_and_the_others_keep_their_users(trio: list[ServerProcess]) -> None:
    a, b, c = trio
    users = [f"stay-{i:03d}" for i in range(300)]
    before = assignments(a, users)
    killed = c.env["CHAT_NODE_ID"]
    c.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    c.proc.wait(10)  # type: ignore[union-attr]
    started = time.monotonic()
    survivors = {a.env["CHAT_NODE_ID"], b.env["CHAT_NODE_ID"]}
    for n in (a, b):
        wait_for_view(n, survivors, SESSION_S + 10)
    assert time.monotonic() - started < SESSION_S + 10
    after = assignments(a, users)
    assert killed not in after.values()
    kept = [u for u in users if before[u] != killed]
    stayed = sum(1 for u in kept if after[u] == before[u])
    assert stayed >= 0.9 * len(kept), f"only {stayed} of {len(kept)} users kept their node"
    c.start(60)  # back for the module's other tests


def test_no_worker_id_or_message_id_is_ever_shared_through_zookeeper_faults(tmp_path: Path) -> None:
    """Two nodes on a private ZooKeeper keep sending while ZooKeeper restarts and one node is
    frozen past its session timeout. Every ID stored is unique, and each worker ID's messages
    come from one node at a time (contiguous runs in ID order)."""
    zk = PrivateZooKeeper(tmp_path / "zk")
    zk.start()
    session_s = 2.0
    a = zk_node(tmp_path, 31, zk.hosts, session_s).start(60)
    b = zk_node(tmp_path, 32, zk.hosts, session_s).start(60)
    try:
        channel = make_channel(a, "alice", "room", [])
        minted: list[tuple[int, str]] = []  # (message ID, node that minted it)

        def send_round(count: int) -> None:
            for server in (a, b):
                with server.http("alice") as http:
                    for _ in range(count):
                        r = http.post(f"/v1/channels/{channel}/messages", json={"text": "x", "client_msg_id": secrets.token_hex(8)})
                        if r.status_code == 201:
                            minted.append((int(r.json()["message"]["id"]), server.env["CHAT_NODE_ID"]))
                        else:  # refused up front (no lease right now): fine, never a duplicate
                            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text

        send_round(20)
        zk.restart()
        send_round(20)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)  # frozen past its session: its lease is gone on the server
        time.sleep(session_s * 2)  # the frozen node cannot be observed from inside: wait it out
        send_round_b_only = b.http("alice")
        with send_round_b_only as http:
            for _ in range(20):
                r = http.post(f"/v1/channels/{channel}/messages", json={"text": "x", "client_msg_id": secrets.token_hex(8)})
                assert r.status_code == 201, r.text
                minted.append((int(r.json()["message"]["id"]), b.env["CHAT_NODE_ID"]))
        a.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 30
        while True:  # a resumed node refuses until it holds a lease again, then mints
            with a.http("alice") as http:
                r = http.post(f"/v1/channels/{channel}/messages", json={"text": "x", "client_msg_id": secrets.token_hex(8)})
            if r.status_code == 201:
                minted.append((int(r.json()["message"]["id"]), a.env["CHAT_NODE_ID"]))
                break
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
            time.sleep(0.2)
        send_round(20)

        ids = [m for m, _ in minted]
        assert len(ids) == len(set(ids)), "a message ID was minted twice"
        with a.http("alice") as http:
            stored: list[int] = []
            after = None
            while True:
                page = http.get(f"/v1/channels/{channel}/messages", params={"limit": 200, **({"after": after} if after else {})}).json()
                stored += [int(m["id"]) for m in page["messages"]]
                if not page["has_more"]:
                    break
                after = page["messages"][-1]["id"]
        assert sorted(stored) == sorted(ids) and len(stored) == len(set(stored))
        by_worker: dict[int, list[str]] = collections.defaultdict(list)
        for message_id, who in sorted(minted):
            by_worker[worker_of(message_id)].append(who)
        for worker, holders in by_worker.items():
            runs = [h for i, h in enumerate(holders) if i == 0 or holders[i - 1] != h]
            assert len(runs) == len(set(runs)), f"worker {worker} went back and forth between nodes: {runs}"
    finally:
        for server in (a, b):
            if server.proc is not None and server.proc.poll() is None:
                server.proc.send_signal(signal.SIGCONT)
            server.kill()
        zk.kill()
