"""One log format for the node and uvicorn (chat/logsetup.py): JSON lines that parse, readable text,
the node and the request or session in every line, and no token in either format — whichever
logger wrote it and however the parameter is spelt."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from chat import logcontext, logsetup
from chat.config import from_env
from tests.unit.conftest import SECRET, Node, make_node

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    """Logging configured as the node does it, into a buffer; every logger it touched restored after."""
    touched = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate) for logger in touched]
    buffer = io.StringIO()
    try:
        handler = logsetup.configure(kind="json", level="info", node_id="node-1", stream=buffer)
        for logger in touched[1:]:
            logger.setLevel(logging.INFO)  # as uvicorn.Config sets them
        yield buffer, handler
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)


def lines(buffer: io.StringIO) -> list[str]:
    return [line for line in buffer.getvalue().splitlines() if line]


def test_json_lines_parse_and_carry_time_level_logger_node_and_context(captured: tuple[io.StringIO, logging.Handler]) -> None:
    buffer, handler = captured
    handler.setFormatter(logsetup.JsonFormatter())
    request = logcontext.request_id.set("req-1")
    try:
        logging.getLogger("chat.test").warning("store slow: %d ms", 250)
    finally:
        logcontext.request_id.reset(request)
    session = logcontext.session_id.set("sess-1")
    try:
        logging.getLogger("uvicorn.error").info('%s - "WebSocket %s" [accepted]', "1.2.3.4:5", f"/v1/ws?token={TOKEN}")
    finally:
        logcontext.session_id.reset(session)
    first, second = (orjson.loads(line) for line in lines(buffer))
    assert first["level"] == "warning" and first["logger"] == "chat.test" and first["node"] == "node-1"
    assert first["message"] == "store slow: 250 ms" and first["request_id"] == "req-1" and "session_id" not in first
    assert first["time"].endswith("Z") and first["time"][10] == "T" and len(first["time"]) == 24
    assert second["session_id"] == "sess-1" and second["message"] == '1.2.3.4:5 - "WebSocket /v1/ws?token=<redacted>" [accepted]'


@pytest.mark.parametrize("kind", ["json", "text"])
@pytest.mark.parametrize("spelling", ["token", "%74oken", "TOKEN", "tok%65n"])
def test_no_token_reaches_either_format_from_any_logger(captured: tuple[io.StringIO, logging.Handler], kind: str, spelling: str) -> None:
    """Not only the loggers the redacting filter sits on: the formatters redact every line,
    tracebacks included, so a line nobody thought about cannot leak one either."""
    buffer, handler = captured
    handler.setFormatter(logsetup.formatter(kind))
    url = f"http://127.0.0.1:8000/v1/ws?{spelling}={TOKEN}&x=1"
    logging.getLogger("some.library").info("fetching %s", url)
    logging.getLogger("chat.access").info("GET %s 401", url, extra={"path": url, "status": 401})
    try:
        raise RuntimeError(f"cannot open {url}")
    except RuntimeError:
        logging.getLogger("chat.app").exception("failed")
    out = buffer.getvalue()
    assert TOKEN not in out and f"{spelling}=<redacted>" in out
    if kind == "json":
        parsed = [orjson.loads(line) for line in lines(buffer)]
        assert parsed[1]["path"].endswith("=<redacted>&x=1") and parsed[1]["status"] == 401
        assert "Traceback" in parsed[2]["exc"] and "RuntimeError" in parsed[2]["exc"]


def test_text_lines_read_at_a_glance(captured: tuple[io.StringIO, logging.Handler]) -> None:
    buffer, handler = captured
    handler.setFormatter(logsetup.TextFormatter())
    logging.getLogger("chat.node").info("draining: %d sockets", 3)
    (line,) = lines(buffer)
    stamp, level, logger, context, *message = line.split(" ")
    assert stamp.endswith("Z") and level == "INFO" and logger == "chat.node" and context == "[node=node-1]"
    assert " ".join(message) == "draining: 3 sockets"


def test_configure_routes_uvicorn_through_the_one_handler(captured: tuple[io.StringIO, logging.Handler]) -> None:
    _, handler = captured
    assert [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler] == [handler]  # (pytest adds its own)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert logging.getLogger(name).handlers == [] and logging.getLogger(name).propagate is True


def test_a_failed_start_is_one_json_line_with_its_exit_code() -> None:
    line = logsetup.failure_line("cannot reach Redis at redis://127.0.0.1:1/0 (CHAT_REDIS_URL)", 5, node_id="n-1")
    assert "\n" not in line
    parsed = orjson.loads(line)
    assert parsed["level"] == "critical" and parsed["logger"] == "chat" and parsed["exit_code"] == 5 and parsed["node"] == "n-1"
    assert parsed["message"].startswith("cannot reach Redis")
    problems = orjson.loads(logsetup.failure_line("invalid configuration", 2, problems=["CHAT_PORT='x': not an integer"]))["problems"]
    assert problems == ["CHAT_PORT='x': not an integer"]


def test_log_format_follows_the_environment_unless_chosen(tmp_path: Path) -> None:
    base = {"CHAT_JWT_SECRET": SECRET, "CHAT_DATA_DIR": str(tmp_path)}
    assert from_env(base).log_format == "text"
    assert from_env({**base, "CHAT_ENV": "production"}).log_format == "json"
    assert from_env({**base, "CHAT_ENV": "production", "CHAT_LOG_FORMAT": "text"}).log_format == "text"
    assert from_env({**base, "CHAT_ACCESS_LOG": "1"}).access_log is True
    with pytest.raises(Exception, match="CHAT_LOG_FORMAT"):
        from_env({**base, "CHAT_LOG_FORMAT": "xml"})
    with pytest.raises(Exception, match="CHAT_METRICS_TOKEN") as refused:
        from_env({**base, "CHAT_METRICS_TOKEN": "short-secret"})
    assert "short-secret" not in str(refused.value)
    assert "m" * 40 not in repr(from_env({**base, "CHAT_METRICS_TOKEN": "m" * 40}))


@pytest.fixture
def logged_node(tmp_path: Path) -> Iterator[Node]:
    yield from make_node(tmp_path, CHAT_ACCESS_LOG="1")


def test_the_access_log_gives_each_request_an_id_and_hides_tokens(logged_node: Node, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chat.access")
    r = logged_node.client.get(f"/v1/channels?token={TOKEN}&limit=5", headers={"X-Request-ID": "from-the-proxy"})
    assert r.status_code == 401 and r.headers["x-request-id"] == "from-the-proxy"
    generated = logged_node.client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert generated != "bad id with spaces" and len(generated) == 16
    records = [r for r in caplog.records if r.name == "chat.access"]
    assert [(r.method, r.status) for r in records] == [("GET", 401), ("GET", 200)]  # type: ignore[attr-defined]
    assert records[0].path == "/v1/channels?token=<redacted>&limit=5"  # type: ignore[attr-defined]
    assert all(TOKEN not in r.getMessage() for r in records)
