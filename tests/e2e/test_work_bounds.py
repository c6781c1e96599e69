"""Issue 12, item 9 (work per request is bounded), against a real ``chat serve``: four sockets
each sending one subscribe frame that lists a channel 500 times with ``since`` must not pin the
process. The node's CPU time is read from /proc/<pid>/stat around the four requests (CPU time,
not wall time: other load on the machine does not inflate it)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from tests.support.client import WsClient
from tests.support.server import ServerProcess

MESSAGES = 200
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("work")).start()
    yield proc
    proc.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def test_four_sockets_subscribing_to_one_channel_500_times_cost_four_replays(node: ServerProcess) -> None:
    with node.http("alice") as http:
        r = http.post("/v1/channels", json={"kind": "group", "name": "busy", "members": ["bob"]})
        channel = r.json()["channel"]["id"]
    for sender in ("alice", "bob"):  # half each: within each user's HTTP burst
        with node.http(sender) as http:
            for i in range(MESSAGES // 2):
                assert http.post(f"/v1/channels/{channel}/messages", json={"text": f"m{i}", "client_msg_id": f"{sender}{i}"}).status_code == 201

    async def subscriber(user: str) -> int:
        async with await WsClient.connect(node.ws_url, node.token(user)) as ws:
            reply = await ws.request("subscribe", channels=[channel] * 500, since={channel: "0"}, timeout=60)
            assert reply["op"] == "subscribed"
            replayed = await ws.messages(MESSAGES, timeout=60)
            assert len({m["id"] for m in replayed}) == MESSAGES
            assert (await ws.request("heartbeat", timeout=60))["op"] == "heartbeat_ack"
            later = [f for f in await ws.drain_nothing(0.2) if f["op"] == "message"]  # presence pushes may come too
            return len(replayed) + len(later)

    async def four() -> list[int]:
        return await asyncio.gather(*(subscriber(user) for user in ("alice", "bob", "alice", "bob")))

    before = cpu_seconds(node.pid)
    counts = asyncio.run(four())
    spent = cpu_seconds(node.pid) - before
    assert counts == [MESSAGES] * 4  # one replay each, nothing sent twice
    # One replay of 200 messages costs ~0.05 s; listing the channel 500 times used to replay it 500 times.
    assert spent < 1.5, f"the node spent {spent:.2f} s of CPU on four subscribe frames"
