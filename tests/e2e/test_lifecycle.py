"""Running a node (PROTOCOL.md, "Running a node"): restarts keep everything, SIGTERM drains
and exits 0, ``chat token`` works with the server, configuration errors are clear."""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
from websockets.exceptions import ConnectionClosed

from chat.config import dev_secret_path
from tests.support.client import WsClient
from tests.support.server import TEST_SECRET, ServerProcess, free_port

CHAT_CLI = Path(sys.executable).with_name("chat")  # the console script (`chat serve`, `chat token`)


def uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def clean_env(**chat: str) -> dict[str, str]:
    """The test's environment without any CHAT_* variable, plus ``chat``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(chat)
    return env


def run_cli(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    command = [str(CHAT_CLI)] if CHAT_CLI.exists() else [sys.executable, "-m", "chat"]
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def cli_token(user: str, env: dict[str, str], *extra: str) -> str:
    result = run_cli("token", user, *extra, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # just the token, so `$(chat token bob)` works
    return lines[0]


def bearer(server: ServerProcess, token: str) -> httpx.Client:
    return server.http(token=token)


async def test_restart_keeps_history_and_idempotency(fresh_server: ServerProcess) -> None:
    server = fresh_server.start()
    alice, bob = uid("alice"), uid("bob")
    with server.http(alice) as http:
        r = http.post("/v1/channels", json={"kind": "group", "name": "durable", "members": [bob]})
        channel = r.json()["channel"]
        sent = []
        for i in range(5):
            r = http.post(f"/v1/channels/{channel['id']}/messages", json={"text": f"m{i}", "client_msg_id": f"c{i}"})
            assert r.status_code == 201
            sent.append(r.json()["message"])
        dm = http.post("/v1/dms", json={"user": bob}).json()["channel"]
    assert server.terminate() == 0

    server.start()
    with server.http(bob) as http:
        assert http.get(f"/v1/channels/{channel['id']}").json()["channel"]["members"] == sorted([alice, bob])
        page = http.get(f"/v1/channels/{channel['id']}/messages").json()
        assert page == {"messages": sent, "has_more": False}
        assert http.post("/v1/dms", json={"user": alice}).json()["channel"]["id"] == dm["id"]
    with server.http(alice) as http:
        # The idempotency key outlives the process.
        retry = http.post(f"/v1/channels/{channel['id']}/messages", json={"text": "changed", "client_msg_id": "c0"})
        assert retry.status_code == 200 and retry.json()["message"] == sent[0]
        new = http.post(f"/v1/channels/{channel['id']}/messages", json={"text": "after", "client_msg_id": "c5"})
        assert new.status_code == 201
        assert int(new.json()["message"]["id"]) > int(sent[-1]["id"])  # IDs keep increasing
    # A reconnecting client recovers from the store of the restarted node.
    async with await WsClient.connect(server.ws_url, server.token(bob)) as b:
        frame_id = await b.send("subscribe", channels=[channel["id"]], since={channel["id"]: sent[2]["id"]})
        await b.expect("subscribed", id=frame_id)
        got = await b.messages(3)
        assert got == [*sent[3:], new.json()["message"]]


async def test_acked_messages_survive_a_crash(fresh_server: ServerProcess) -> None:
    """An ack means durably stored: SIGKILL right after the acks loses none of them."""
    server = fresh_server.start()
    alice = uid("alice")
    with server.http(alice) as http:
        channel = http.post("/v1/channels", json={"kind": "room", "name": "crash"}).json()["channel"]["id"]
    async with await WsClient.connect(server.ws_url, server.token(alice)) as client:
        frame_ids = [await client.send("send", channel=channel, text=f"m{i}", client_msg_id=f"c{i}") for i in range(30)]
        acked = [(await client.expect("ack", id=f))["message"] for f in frame_ids]
        server.kill()  # SIGKILL: no drain, no clean close of the store
    server.start()
    with server.http(alice) as http:
        page = http.get(f"/v1/channels/{channel}/messages").json()
    assert page["messages"] == sorted(acked, key=lambda m: int(m["id"]))


async def test_sigterm_closes_clients_with_1001_and_exits_0(fresh_server: ServerProcess) -> None:
    server = fresh_server.start()
    alice, bob = uid("alice"), uid("bob")
    clients = [await WsClient.connect(server.ws_url, server.token(u)) for u in (alice, alice, bob)]
    for client in clients:
        assert (await client.request("heartbeat"))["op"] == "heartbeat_ack"
    exit_code = asyncio.create_task(asyncio.to_thread(server.terminate))
    for client in clients:
        try:
            async with asyncio.timeout(15):
                while True:
                    frame = orjson.loads(await client.conn.recv())
                    assert frame["op"] in ("reconnect",), frame  # nothing but a hint may precede the close
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1001
    assert await exit_code == 0
    assert any("draining" in line for line in server.lines)
    assert not any("Traceback" in line for line in server.lines), "\n".join(server.lines[-30:])


async def test_chat_token_cli_prints_a_token_the_server_accepts(fresh_server: ServerProcess) -> None:
    server = fresh_server.start()
    env = clean_env(CHAT_JWT_SECRET=TEST_SECRET, CHAT_DATA_DIR=str(server.data_dir))
    token = cli_token("bob", env)
    with bearer(server, token) as http:
        assert http.get("/v1/connect").status_code == 200
    async with await WsClient.connect(server.ws_url, token) as client:
        assert client.hello["user"] == "bob"
    # --ttl: an already expired token is refused (past the 60 s maximum leeway).
    expired = cli_token("bob", env, "--ttl", "-120")
    with bearer(server, expired) as http:
        assert http.get("/v1/connect").status_code == 401
    assert cli_token("bot-1", env, "--role", "bot")
    bad = run_cli("token", "not a user", env=env)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and bad.stderr.strip()


async def test_generated_dev_secret_is_private_and_shared_with_chat_token(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.env["CHAT_JWT_SECRET"] = ""  # nothing configured: the node generates one in its data dir
    server.start()
    path = dev_secret_path(server.data_dir)
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) >= 32

    env = clean_env(CHAT_DATA_DIR=str(server.data_dir))
    token = cli_token("carol", env)
    with bearer(server, token) as http:
        assert http.get("/v1/connect").status_code == 200
    async with await WsClient.connect(server.ws_url, token) as client:
        assert client.hello["user"] == "carol"
    # The node really uses the generated secret, not the test one.
    other = ServerProcess(server.data_dir).token("carol")
    with bearer(server, other) as http:
        assert http.get("/v1/connect").status_code == 401
    # The secret survives a restart: tokens stay valid.
    assert server.terminate() == 0
    server.start()
    with bearer(server, token) as http:
        assert http.get("/v1/connect").status_code == 200


def _problems(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("chat:")]


def test_production_without_a_secret_refuses_to_start(tmp_path: Path) -> None:
    env = clean_env(CHAT_ENV="production", CHAT_DATA_DIR=str(tmp_path / "data"), CHAT_PORT=str(free_port()))
    result = run_cli("serve", env=env)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "Application startup complete" not in output
    # Production logs JSON (CHAT_LOG_FORMAT's default there): one line, every problem in it.
    (line,) = result.stderr.splitlines()
    failure = orjson.loads(line)
    assert failure["exit_code"] == 2 and failure["message"] == "invalid configuration"
    (problem,) = failure["problems"]
    assert "CHAT_JWT_SECRET" in problem and "production" in problem, result.stderr
    assert not dev_secret_path(tmp_path / "data").exists()


def test_invalid_settings_give_one_clear_line_each(tmp_path: Path) -> None:
    env = clean_env(
        CHAT_JWT_SECRET=TEST_SECRET,
        CHAT_DATA_DIR=str(tmp_path / "data"),
        CHAT_PORT="abc",
        CHAT_RATE_BURST="0",
        CHAT_ENV="staging",
    )
    for command in (["serve"], ["token", "bob"]):
        result = run_cli(*command, env=env)
        assert result.returncode != 0, command
        assert "Traceback" not in result.stdout + result.stderr
        assert result.stdout.strip() == ""  # no token printed, no server started
        problems = _problems(result.stderr)
        assert len(problems) == 3, result.stderr
        for variable, value in (("CHAT_PORT", "abc"), ("CHAT_RATE_BURST", "0"), ("CHAT_ENV", "staging")):
            [line] = [p for p in problems if variable in p]
            assert value in line
