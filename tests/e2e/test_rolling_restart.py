"""A rolling restart of three nodes under load: 300 clients keep sending while each node in
turn is drained (SIGTERM), exits 0 and comes back. Every client follows `reconnect` (or asks
/v1/connect again), ends connected, and every acked message is stored exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import WebSocketException

from tests.e2e.test_cluster import node
from tests.support import services
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.cassandra, pytest.mark.redis, pytest.mark.zookeeper, pytest.mark.timeout(240)]

CLIENTS, GROUP_SIZE, SEND_EVERY_S = 300, 10, 3.0


class Client:
    """Sends a message every few seconds; follows `reconnect`; resends what was not acked with
    the same client_msg_id (idempotent), so nothing acked is lost and nothing is stored twice."""

    def __init__(self, user: str, channel: str, nodes: list[ServerProcess]) -> None:
        self.user, self.channel, self.nodes = user, channel, nodes
        self.acked: dict[str, str] = {}  # client_msg_id → message ID
        self.connected = False
        self.moves = 0
        self._next_url: str | None = None
        self._stop = asyncio.Event()
        self.oddities: list[dict[str, Any]] = []  # first frames that were not `hello`

    async def run(self) -> None:
        pending: str | None = None
        while not self._stop.is_set():
            url = self._next_url or await self._ask()
            self._next_url = None
            if url is None:
                await asyncio.sleep(0.2)
                continue
            try:
                token = self.nodes[0].token(self.user)
                async with websockets.connect(f"{url}?token={token}", open_timeout=5) as ws:
                    first = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
                    if first.get("op") != "hello":
                        self.oddities.append(first)
                        continue
                    self.connected = True
                    while not self._stop.is_set():
                        pending = pending or secrets.token_hex(6)
                        await ws.send(orjson.dumps({"op": "send", "id": pending, "channel": self.channel, "text": "hi", "client_msg_id": pending}))
                        if await self._await_ack(ws, pending):
                            pending = None
                        if self._next_url is not None:
                            self.moves += 1
                            break
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stop.wait(), SEND_EVERY_S * random.uniform(0.5, 1.5))
            except (OSError, TimeoutError, WebSocketException):
                pass  # ConnectionClosed, InvalidStatus, a handshake cut by a node going away
            finally:
                self.connected = False
        # Leave connected: the last state is checked by the test before stop() returns.

    async def _await_ack(self, ws: Any, frame_id: str) -> bool:
        """Read until the ack of ``frame_id`` (True) or a `reconnect` / error (False)."""
        async with asyncio.timeout(15):
            while True:
                frame = orjson.loads(await ws.recv())
                op = frame.get("op")
                if op == "reconnect":
                    self._next_url = frame["url"]
                elif op == "ack" and frame.get("id") == frame_id:
                    self.acked[frame_id] = frame["message"]["id"]
                    return True
                elif op == "error" and frame.get("id") == frame_id:
                    return False  # refused (e.g. no lease for a moment): resent with the same key
                if self._next_url is not None and op != "ack":
                    return False

    async def _ask(self) -> str | None:
        for server in random.sample(self.nodes, len(self.nodes)):
            try:
                async with httpx.AsyncClient(base_url=server.http_url, timeout=3) as http:
                    r = await http.get("/v1/connect", headers={"Authorization": f"Bearer {server.token(self.user)}"})
                if r.status_code == 200:
                    return str(r.json()["url"])
            except httpx.HTTPError:
                continue
        return None

    def stop(self) -> None:
        self._stop.set()


async def test_rolling_restart_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    hosts = f"{services.ZOOKEEPER_HOSTS}/chat-roll-{secrets.token_hex(4)}"
    # One owner adds all 300 clients to their groups: more than the default burst of adds (200).
    limits = {"CHAT_ADD_OTHERS_BURST": str(CLIENTS)}
    nodes = [node(tmp_path, 41 + i, CHAT_ZOOKEEPER_HOSTS=hosts, CHAT_DRAIN_GRACE_S="3", CHAT_ZOOKEEPER_SESSION_TIMEOUT_S="4", **limits) for i in range(3)]
    clients: list[Client] = []
    tasks: list[asyncio.Task[None]] = []
    try:  # the nodes are killed however the test ends
        for n in nodes:
            n.start(60)
        try:
            run = secrets.token_hex(3)
            with nodes[0].http(f"owner-{run}") as http:
                for g in range(CLIENTS // GROUP_SIZE):
                    members = [f"u{run}-{g}-{i}" for i in range(GROUP_SIZE)]
                    r = http.post("/v1/channels", json={"kind": "group", "name": f"g{g}", "members": members})
                    assert r.status_code == 201, r.text
                    clients += [Client(m, r.json()["channel"]["id"], nodes) for m in members]
            tasks = [asyncio.create_task(c.run()) for c in clients]
            await _until(lambda: all(c.connected for c in clients) and all(c.acked for c in clients), 60)
            for server in nodes:
                exit_code = await asyncio.to_thread(server.terminate, 30)
                assert exit_code == 0, "\n".join(server.lines[-20:])
                await asyncio.to_thread(server.start, 60)
            before = {c.user: len(c.acked) for c in clients}
            try:
                await _until(lambda: all(c.connected and len(c.acked) > before[c.user] for c in clients), 60)
            except TimeoutError:
                behind = [c for c in clients if not (c.connected and len(c.acked) > before[c.user])]
                stuck = [(c.user, c.connected, len(c.acked) - before[c.user], c.moves, c.oddities[-1:]) for c in behind]
                died = [t.exception() for t in tasks if t.done() and not t.cancelled()]
                raise AssertionError(f"{len(stuck)} clients stuck after the restarts, e.g. {stuck[:5]}; client tasks ended: {died[:3]}") from None
            assert sum(c.moves for c in clients) > 0, "nobody followed a reconnect hint"
        finally:
            for c in clients:
                c.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
        stored: list[dict[str, Any]] = []
        for channel in {c.channel for c in clients}:
            member = next(c.user for c in clients if c.channel == channel)
            stored += _all_messages(nodes[0], member, channel)
        keys = [(m["sender"], m["client_msg_id"]) for m in stored]
        assert len(keys) == len(set(keys)), "a client_msg_id was stored twice"
        ids = {m["id"] for m in stored}
        assert len(ids) == len(stored)
        acked = [(c.user, key, message_id) for c in clients for key, message_id in c.acked.items()]
        missing = [a for a in acked if a[2] not in ids]
        assert not missing, f"{len(missing)} acked messages are not stored, e.g. {missing[:3]}"
    finally:
        for n in nodes:
            n.kill()


def _all_messages(server: ServerProcess, user: str, channel: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = None
    with server.http(user) as http:
        while True:
            params: dict[str, Any] = {"limit": 200}
            if after:
                params["after"] = after
            page = http.get(f"/v1/channels/{channel}/messages", params=params).json()
            out += page["messages"]
            if not page["has_more"]:
                return out
            after = page["messages"][-1]["id"]


async def _until(condition: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - no event to await: the clients update plain fields
            await asyncio.sleep(0.2)  # polling client state the clients update as they go

