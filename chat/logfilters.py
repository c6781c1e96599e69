"""Filters on uvicorn's loggers: no tokens in log lines, and no log floods from outsiders.

* :class:`RedactingFilter` — browsers pass their token in the WebSocket URL (``?token=``) and
  uvicorn logs the URL as received. Every query parameter whose name *decodes* to ``token``
  (``%74oken``, ``TOKEN`` …) is redacted, whatever the spelling; the node itself accepts only
  the exact name ``token`` (chat/http.py). It also drops a false error uvicorn's sans-I/O
  WebSocket logs after an HTTP denial response, and uvicorn's "startup failed" line (the node
  prints why it failed itself, on one line).
* :class:`QuietFilter` — lines an outsider triggers at will (an invalid UTF-8 frame logs a full
  traceback per frame; every malformed request head a warning) pass at most once per interval,
  without the traceback, saying how many there were.
* :class:`DriverTracebacks` — the Cassandra driver's records without their tracebacks.
* :class:`PerConnection` — the two lines uvicorn and websockets log for every accepted WebSocket
  (``"WebSocket /v1/ws?token=…" [accepted]``, ``connection open``) belong to the access log: they
  are dropped unless ``CHAT_ACCESS_LOG`` is on. A node that 5,000 clients reconnect to would
  otherwise write 10,000 lines, and formatting them was 5 % of a handshake's CPU.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

from chat.ratelog import OncePerInterval, suffix

# A query parameter in a logged URL: its separator, name and value.
_QUERY_PARAM = re.compile(r"([?&;])([^=&;\s\"?#]*)=([^&;\s\"#]*)")

#: uvicorn lines any client can cause as often as it likes (matched on the unformatted message).
CLIENT_TRIGGERED = (
    "Invalid UTF-8 sequence received from client.",  # the socket is closed 1007 right after
    "Invalid HTTP request received.",  # the request is answered 400/414/431 (chat/listener.py)
)


#: Logged once per accepted WebSocket (matched on the unformatted message).
PER_CONNECTION = (
    '%s - "WebSocket %s" [accepted]',  # uvicorn.error
    "connection open",  # websockets' own line, through uvicorn's logger
)

_FALSE_OR_REPEATED = (
    "ASGI callable returned without completing handshake.",  # logged after an HTTP denial response
    "Application startup failed. Exiting.",  # chat/server.py prints why, on one line
)


def redact(text: str) -> str:
    """``text`` with the value of every query parameter named (once decoded) ``token`` hidden."""

    def hide(match: re.Match[str]) -> str:
        separator, name, _ = match.groups()
        return f"{separator}{name}=<redacted>" if unquote(name).strip().lower() == "token" else match.group(0)

    return _QUERY_PARAM.sub(hide, text)


class RedactingFilter(logging.Filter):
    """Hides tokens in URLs of uvicorn's log lines (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _FALSE_OR_REPEATED:
            return False
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


class QuietFilter(logging.Filter):
    """Lets each of ``messages`` through at most once per ``interval_s``, without its traceback."""

    def __init__(self, messages: tuple[str, ...] = CLIENT_TRIGGERED, *, interval_s: float = 60.0) -> None:
        super().__init__()
        self._gates = {message: OncePerInterval(interval_s=interval_s) for message in messages}

    def filter(self, record: logging.LogRecord) -> bool:
        gate = self._gates.get(record.msg) if isinstance(record.msg, str) else None
        if gate is None:
            return True
        count = gate.tick()
        if count is None:
            return False
        record.exc_info = None  # a traceback of the client's bad bytes helps no one
        record.exc_text = None
        record.msg = record.msg + suffix(count)
        return True


class DriverTracebacks(logging.Filter):
    """Drops the traceback of the Cassandra driver's records (it logs one for every failed
    connection attempt, which it retries; the adapter reports the outcome on one line). The
    message stays; with debug logging the traceback does too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("cassandra") and record.exc_info and not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            record.exc_info = None
            record.exc_text = None
        return True


class PerConnection(logging.Filter):
    """Drops the lines logged for every accepted WebSocket (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in PER_CONNECTION


def install(*, access_log: bool = False) -> None:
    """Put the filters on uvicorn's loggers (after ``uvicorn.Config``, which configures them) and
    on the root logger's handlers (after ``logging.basicConfig``)."""
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(RedactingFilter())
    logging.getLogger("uvicorn.error").addFilter(QuietFilter())
    if not access_log:
        logging.getLogger("uvicorn.error").addFilter(PerConnection())
    for handler in logging.getLogger().handlers:
        handler.addFilter(DriverTracebacks())
