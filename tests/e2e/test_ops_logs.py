"""The operators' surface of a real ``chat serve``: JSON log lines that parse and never hold a token
(query string, ``%74oken`` too), the access log, one JSON line per failed start with the
documented exit code, and ``/metrics`` read by a scraper."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from chat.errors import ExitCode
from tests.e2e.test_lifecycle import clean_env, run_cli
from tests.support.server import TEST_SECRET, ServerProcess, free_port

pytestmark = pytest.mark.timeout(120)

SCRAPE_TOKEN = "scrape-token-" + "z" * 40


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"CHAT_LOG_FORMAT": "json", "CHAT_ACCESS_LOG": "1", "CHAT_METRICS_TOKEN": SCRAPE_TOKEN}
    proc = ServerProcess(tmp_path_factory.mktemp("jsonlogs"), env=env).start()
    yield proc
    proc.kill()


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines]


def test_json_logs_parse_hold_no_token_and_log_each_request(node: ServerProcess) -> None:
    token = node.token("alice")

    async def handshakes() -> int:
        async with websockets.connect(f"{node.ws_url}?token={token}") as ws:
            await ws.recv()  # hello
        try:
            async with websockets.connect(f"{node.ws_url}?%74oken={token}"):
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    assert asyncio.run(handshakes()) == 401
    with httpx.Client(base_url=node.http_url, timeout=10) as http:
        assert http.get(f"/v1/channels?token={token}").status_code == 401
        assert http.get("/healthz", headers={"X-Request-ID": "probe-42"}).status_code == 200
    assert node.wait_for_line('"request_id":"probe-42"', 10)
    lines = parsed(node.lines)  # every line the node wrote, uvicorn's included, is a JSON object
    assert not [line for line in node.lines if token in line]
    for line in lines:
        assert {"time", "level", "logger", "node", "message"} <= set(line), line
        assert line["node"] == node.env["CHAT_NODE_ID"]
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    access = [line for line in lines if line["logger"] == "chat.access"]
    channels = next(line for line in access if line["path"].startswith("/v1/channels"))
    assert channels["path"] == "/v1/channels?token=<redacted>" and channels["status"] == 401 and channels["method"] == "GET"
    assert channels["duration_ms"] >= 0 and channels["client"] == "127.0.0.1" and channels["request_id"]
    healthz = next(line for line in access if line["path"] == "/healthz")
    assert healthz["request_id"] == "probe-42"
    sockets = [line["message"] for line in lines if "WebSocket /v1/ws" in line["message"]]
    assert any("?token=<redacted>" in m for m in sockets) and any("?%74oken=<redacted>" in m for m in sockets), sockets


def test_a_scraper_reads_metrics_with_its_token(node: ServerProcess) -> None:
    with httpx.Client(base_url=node.http_url, timeout=10) as http:
        assert http.get("/metrics").status_code == 200  # development, from this machine: no token needed
        r = http.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert r.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    (info,) = families["chat_node_info"].samples
    assert info.labels["node_id"] == node.env["CHAT_NODE_ID"]
    assert families["chat_ws_handshakes_refused"].type == "counter"
    assert families["chat_event_loop_lag_seconds"].type == "histogram"
    assert SCRAPE_TOKEN not in "\n".join(node.lines)


def failed_start(tmp_path: Path, **env: str) -> tuple[int, list[dict[str, Any]]]:
    settings = {"CHAT_JWT_SECRET": TEST_SECRET, "CHAT_DATA_DIR": str(tmp_path), "CHAT_LOG_FORMAT": "json", **env}
    result = run_cli("serve", env=clean_env(**settings), timeout=60)
    assert result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    return result.returncode, parsed(result.stderr.splitlines())


def test_each_failed_start_is_one_json_line_with_its_exit_code(tmp_path: Path, node: ServerProcess) -> None:
    down = free_port()
    cases = [
        ({"CHAT_PORT": str(node.port)}, ExitCode.PORT_IN_USE, f"port {node.port} on 127.0.0.1 is in use"),
        ({"CHAT_PORT": str(free_port()), "CHAT_REDIS_URL": f"redis://:hunter2@127.0.0.1:{down}/0"}, ExitCode.REDIS, "cannot reach Redis at redis://127.0.0.1:"),
        ({"CHAT_PORT": str(free_port()), "CHAT_DATA_DIR": str(node.data_dir)}, ExitCode.DATA_DIR, "the data dir "),
    ]
    for i, (env, code, starts) in enumerate(cases):
        returncode, lines = failed_start(tmp_path / f"case-{i}", **env)
        assert returncode == code
        (failure,) = [line for line in lines if "exit_code" in line]
        assert failure["exit_code"] == code and failure["level"] == "critical" and failure["message"].startswith(starts), failure
        assert "hunter2" not in orjson.dumps(lines).decode()
    # A configuration that does not parse: one line naming every problem (CHAT_ENV=production
    # alone chooses JSON, before the rest of the configuration could be read).
    result = run_cli("serve", env=clean_env(CHAT_ENV="production", CHAT_DATA_DIR=str(tmp_path / "c"), CHAT_PORT="abc"), timeout=60)
    assert result.returncode == ExitCode.CONFIG
    (line,) = result.stderr.splitlines()
    failure = orjson.loads(line)
    assert failure["exit_code"] == ExitCode.CONFIG and failure["message"] == "invalid configuration"
    assert any("CHAT_PORT" in p for p in failure["problems"]) and any("CHAT_JWT_SECRET" in p for p in failure["problems"])
