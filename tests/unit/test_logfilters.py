"""Issue 12, item 11: tokens redacted from logged URLs under any spelling, and lines an outsider
triggers at will (invalid UTF-8 frames, malformed request heads) logged once per interval
without a traceback."""

from __future__ import annotations

import logging
import sys

import pytest

from chat.logfilters import PerConnection, QuietFilter, RedactingFilter, install, redact
from chat.ratelog import OncePerInterval


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("/v1/ws?token=abc.def", "/v1/ws?token=<redacted>"),
        ("/v1/ws?%74oken=abc.def", "/v1/ws?%74oken=<redacted>"),
        ("/v1/ws?x=1&TOKEN=abc&y=2", "/v1/ws?x=1&TOKEN=<redacted>&y=2"),
        ("/v1/ws?tok%65n=abc", "/v1/ws?tok%65n=<redacted>"),
        ("/v1/ws?notatoken=abc&token_type=x", "/v1/ws?notatoken=abc&token_type=x"),
    ],
)
def test_tokens_are_redacted_under_any_spelling(url: str, shown: str) -> None:
    assert redact(url) == shown
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]', ("1.2.3.4:5", url), None)
    assert RedactingFilter().filter(record) and record.getMessage() == f'1.2.3.4:5 - "WebSocket {shown}" [accepted]'


def test_client_triggered_lines_pass_once_per_interval_without_traceback() -> None:
    quiet = QuietFilter(interval_s=3600)
    try:
        b"\xff".decode()
    except UnicodeDecodeError:
        exc_info = sys.exc_info()

    def record() -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Invalid UTF-8 sequence received from client.", None, exc_info)

    first = record()
    assert quiet.filter(first) and first.exc_info is None and first.getMessage() == "Invalid UTF-8 sequence received from client."
    assert not any(quiet.filter(record()) for _ in range(1000))
    other = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application", None, exc_info)
    assert quiet.filter(other) and other.exc_info is exc_info  # everything else untouched


def test_once_per_interval_counts_what_it_held_back() -> None:
    now = [0.0]
    gate = OncePerInterval(interval_s=10, clock=lambda: now[0])
    assert gate.tick() == 1
    assert [gate.tick() for _ in range(5)] == [None] * 5
    now[0] = 10.0
    assert gate.tick() == 6


def _record(msg: str, args: tuple[object, ...] = ()) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, msg, args, None)


def test_the_lines_of_each_accepted_websocket_are_dropped_and_others_kept() -> None:
    quiet = PerConnection()
    assert not quiet.filter(_record('%s - "WebSocket %s" [accepted]', ("1.2.3.4:5", "/v1/ws")))
    assert not quiet.filter(_record("connection open"))
    assert quiet.filter(_record('%s - "WebSocket %s" %d', ("1.2.3.4:5", "/v1/ws", 401)))  # refusals stay
    assert quiet.filter(_record("Started server process [%d]", (1,)))


@pytest.mark.parametrize("access_log", [False, True])
def test_the_access_log_setting_keeps_them(access_log: bool) -> None:
    logger = logging.getLogger("uvicorn.error")
    before = list(logger.filters)
    try:
        install(access_log=access_log)
        kept = all(f.filter(_record("connection open")) for f in logger.filters)
        assert kept is access_log
    finally:
        logger.filters[:] = before
