"""Offline notifications end to end: a real ``chat serve`` node and a local push webhook
(``ThreadingHTTPServer`` in this process) that records every request and can answer 500 first.

Delivery is at least once: a notification may arrive more than once, but only ever with the
same ``Idempotency-Key`` and the same body — the tests allow exactly that and nothing more.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from chat.store.cassandra_outbox import SHARDS
from tests.support import services
from tests.support.client import WsClient
from tests.support.server import ServerProcess, free_port

SECRET = "hook-secret-" + "z" * 40
WAIT_S = 15.0


@dataclass(frozen=True)
class Hit:
    headers: dict[str, str]
    body: bytes

    @property
    def key(self) -> str:
        return self.headers["idempotency-key"]

    @property
    def json(self) -> dict[str, Any]:
        return orjson.loads(self.body)  # type: ignore[no-any-return]


class Webhook:
    """The push webhook under test: records requests; answers 500 to a recipient's first
    ``fail_first[recipient]`` requests and 204 to everything else."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.hits: list[Hit] = []
        self.fail_first: dict[str, int] = {}
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/push?token=t0ps3cret"

    def start(self) -> Webhook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hit = Hit({k.lower(): v for k, v in self.headers.items()}, body)
                with hook._cond:
                    left = hook.fail_first.get(hit.json.get("recipient", ""), 0)
                    if left:
                        hook.fail_first[hit.json["recipient"]] = left - 1
                    hook.hits.append(hit)
                    hook._cond.notify_all()
                self.send_response(500 if left else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def for_recipient(self, user: str) -> list[Hit]:
        with self._cond:
            return [h for h in self.hits if h.json.get("recipient") == user]

    async def wait(self, done: Callable[[list[Hit]], bool], timeout: float = WAIT_S) -> list[Hit]:
        """Every hit so far, once ``done(hits)`` holds (woken by each request; bounded)."""

        def block() -> list[Hit]:
            with self._cond:
                if not self._cond.wait_for(lambda: done(self.hits), timeout):
                    raise AssertionError(f"webhook: condition not met within {timeout} s; got {[h.key for h in self.hits]}")
                return list(self.hits)

        return await asyncio.to_thread(block)


def signed(hit: Hit) -> bool:
    """Checked here independently of the node's own code: HMAC-SHA256 over "<t>." + body."""
    fields = dict(part.split("=", 1) for part in hit.headers["x-chat-signature"].split(","))
    expected = hmac.new(SECRET.encode(), fields["t"].encode() + b"." + hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < 60


def uid(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


def node_with(data_dir: Path, hook: Webhook) -> ServerProcess:
    return ServerProcess(data_dir, env={"CHAT_PUSH_WEBHOOK_URL": hook.url, "CHAT_PUSH_WEBHOOK_SECRET": SECRET, "CHAT_PUSH_TIMEOUT_S": "2"})


@pytest.fixture(scope="module")
def hook() -> Iterator[Webhook]:
    webhook = Webhook().start()
    yield webhook
    webhook.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, hook: Webhook) -> Iterator[ServerProcess]:
    proc = node_with(tmp_path_factory.mktemp("notify"), hook).start()
    yield proc
    proc.kill()


def open_dm(server: ServerProcess, user: str, other: str) -> str:
    with server.http(user) as http:
        r = http.post("/v1/dms", json={"user": other})
        assert r.status_code in (200, 201), r.text
        return str(r.json()["channel"]["id"])


def create_group(server: ServerProcess, owner: str, members: list[str]) -> str:
    with server.http(owner) as http:
        r = http.post("/v1/channels", json={"kind": "group", "name": "team", "members": members})
        assert r.status_code == 201, r.text
        return str(r.json()["channel"]["id"])


def send(server: ServerProcess, user: str, channel: str, text: str) -> dict[str, Any]:
    with server.http(user) as http:
        r = http.post(f"/v1/channels/{channel}/messages", json={"text": text, "client_msg_id": secrets.token_hex(6)})
        assert r.status_code == 201, r.text
        return r.json()["message"]  # type: ignore[no-any-return]


async def settle(server: ServerProcess, hook: Webhook) -> None:
    """Wait until every notification the node owed before this call has reached the webhook.

    Two markers, one after the other: the node checks messages in order and delivers a claim's
    items together, finishing them all before its next claim. The first marker's arrival shows
    that everything queued before it was claimed; the second marker is put in the outbox only
    after that, so it arrives in a later claim — after all of the first claim's requests."""
    for _ in range(2):
        sender, marker = uid("marker-from"), uid("marker")
        send(server, sender, open_dm(server, sender, marker), "marker")
        await hook.wait(lambda hits, m=marker: any(h.json["recipient"] == m for h in hits))


async def test_a_dm_to_an_offline_user_reaches_the_webhook_signed(node: ServerProcess, hook: Webhook) -> None:
    alice, bob = uid("alice"), uid("bob")
    channel = open_dm(node, alice, bob)
    message = send(node, alice, channel, "are you there? " + "ü" * 300)
    (hit,) = [h for h in await hook.wait(lambda hits: any(h.json["recipient"] == bob for h in hits)) if h.json["recipient"] == bob]
    assert signed(hit)
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["x-chat-attempt"] == "1"
    assert hit.key == hit.json["id"] == f"{message['id']}:{bob}"
    assert hit.json == {
        "id": f"{message['id']}:{bob}",
        "reason": "dm",
        "recipient": bob,
        "sender": alice,
        "channel": {"id": channel, "kind": "dm", "name": ", ".join(sorted((alice, bob)))},
        "message": {"id": message["id"], "ts": message["ts"], "preview": ("are you there? " + "ü" * 300)[:200], "truncated": True},
    }


async def test_a_failed_delivery_is_retried_with_the_same_key(node: ServerProcess, hook: Webhook) -> None:
    alice, bob = uid("alice"), uid("bob")
    hook.fail_first[bob] = 1
    send(node, alice, open_dm(node, alice, bob), "hello?")
    await hook.wait(lambda hits: len([h for h in hits if h.json["recipient"] == bob]) >= 2)
    first, second = hook.for_recipient(bob)[:2]
    assert first.key == second.key and first.body == second.body
    assert (first.headers["x-chat-attempt"], second.headers["x-chat-attempt"]) == ("1", "2")
    assert signed(first) and signed(second)
    assert node.wait_for_line("answering again", 5)
    failing = [line for line in node.lines if "push webhook" in line and "failing: HTTP 500" in line]
    assert len(failing) == 1 and "t0ps3cret" not in failing[0]  # once per outage; the URL's token is not logged


async def test_an_online_recipient_gets_nothing(node: ServerProcess, hook: Webhook) -> None:
    alice, bob = uid("alice"), uid("bob")
    channel = open_dm(node, alice, bob)
    async with await WsClient.connect(node.ws_url, node.token(bob)):
        send(node, alice, channel, "you are online, no push")
        await settle(node, hook)
    assert hook.for_recipient(bob) == []


async def test_a_mention_in_a_group_notifies_only_the_mentioned_offline_member(node: ServerProcess, hook: Webhook) -> None:
    alice, bob, carol, dave, erin = (uid(n) for n in ("alice", "bob", "carol", "dave", "erin"))
    group = create_group(node, alice, [bob, carol, dave])
    async with await WsClient.connect(node.ws_url, node.token(bob)):
        message = send(node, alice, group, f"@{bob} @{carol} and @{erin}: lunch? (not you, {dave}; nor {alice}@example.com)")
        await settle(node, hook)
    (hit,) = hook.for_recipient(carol)
    assert hit.key == f"{message['id']}:{carol}"
    assert (hit.json["reason"], hit.json["sender"], hit.json["channel"]["kind"]) == ("mention", alice, "group")
    assert [hook.for_recipient(u) for u in (alice, bob, dave, erin)] == [[], [], [], []]


def in_outbox(server: ServerProcess, backend: str, keys: set[str]) -> int:
    """How many of ``keys`` the node's outbox holds now, read behind the node's back."""
    if backend == "sqlite":
        with sqlite3.connect(f"file:{server.data_dir / 'chat.sqlite3'}?mode=ro", uri=True) as db:
            return len(keys & {row[0] for row in db.execute("SELECT id FROM notify_outbox")})
    session = services.cql_session(server.env["CHAT_CASSANDRA_KEYSPACE"])
    try:
        since = int(time.time() * 1000) - 3_600_000
        rows = session.execute(f"SELECT notification_id FROM notify_outbox WHERE shard IN ({','.join(map(str, range(SHARDS)))}) AND due_ms >= {since}")
        return len(keys & {row.notification_id for row in rows})
    finally:
        session.cluster.shutdown()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("cassandra", marks=pytest.mark.cassandra)])
async def test_no_notification_is_lost_across_a_kill_while_the_webhook_is_down(tmp_path: Path, backend: str) -> None:
    hook = Webhook()  # not listening yet: every POST is refused
    server = node_with(tmp_path / "node", hook)
    if backend == "cassandra":
        server.env.update(services.cassandra_env())
    try:
        server.start(60)
        pairs = [(uid("from"), uid("to")) for _ in range(3)]
        keys = {f"{send(server, a, open_dm(server, a, b), 'while down')['id']}:{b}" for a, b in pairs}
        assert server.wait_for_line(f"push webhook http://127.0.0.1:{hook.port} failing: ConnectError", WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while in_outbox(server, backend, keys) < len(keys):  # no event to wait on inside the node's store
            assert time.monotonic() < deadline, "the notifications never reached the outbox"
            await asyncio.sleep(0.1)
        server.kill()  # SIGKILL: nothing is flushed, drained or handed back
        hook.start()
        server.start(60)
        # Claimed just before the kill, an item waits out its lease (timeout + store timeout + 15 s).
        hits = await hook.wait(lambda hits: keys <= {h.key for h in hits}, timeout=45)
    finally:
        server.kill()
        hook.stop()
    assert {h.key for h in hits} == keys  # nothing else, nothing lost
    for hit in hits:
        assert signed(hit) and hit.json["id"] == hit.key
        assert all(other.body == hit.body for other in hits if other.key == hit.key)  # a duplicate is the same notification


def test_a_webhook_without_its_secret_refuses_to_start(tmp_path: Path) -> None:
    env = {**node_with(tmp_path, Webhook()).env, "CHAT_PUSH_WEBHOOK_SECRET": ""}
    done = subprocess.run([sys.executable, "-m", "chat", "serve"], check=False, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "CHAT_PUSH_WEBHOOK_SECRET is required when CHAT_PUSH_WEBHOOK_URL is set" in done.stderr
