"""One log format for the node and uvicorn: JSON lines or readable text, tokens never in clear.

:func:`configure` puts one handler on the root logger (stderr) and lets uvicorn's loggers
propagate to it, so the app's lines and uvicorn's share one format:

* ``json`` (the default with ``CHAT_ENV=production``): one object per line with ``time``
  (UTC, RFC 3339, milliseconds), ``level``, ``logger``, ``node``, ``message``, and where there
  is one ``request_id`` / ``session_id`` (:mod:`chat.logcontext`), ``exc`` (a traceback), and
  the fields a line carries (the access log's ``method``, ``path``, ``status``, ``duration_ms``,
  ``client``; a failed start's ``exit_code``);
* ``text`` (development): ``2026-11-30T03:15:08.123Z INFO chat.app [node=n1 req=…] message``.

Both formatters pass the finished message and traceback through
:func:`chat.logfilters.redact`, whatever logger wrote it: a ``token`` query parameter (under any
spelling, ``%74oken`` too) never reaches the output, even from a line no filter knew about.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

from chat import logcontext, logfilters

#: Record attributes a line may carry as its own JSON fields (set with ``extra=``).
FIELDS = ("method", "path", "status", "duration_ms", "client", "exit_code")


class ContextFilter(logging.Filter):
    """Adds this node's ID and the current request or session ID to every record."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node_id
        record.request_id = logcontext.request_id.get()
        record.session_id = logcontext.session_id.get()
        return True


def _timestamp(record: logging.LogRecord) -> str:
    seconds = int(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring for its fields)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": getattr(record, "node", None),
            "message": logfilters.redact(record.getMessage()),
        }
        for key in ("request_id", "session_id"):
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = logfilters.redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exc"] = logfilters.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = logfilters.redact(record.exc_text)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [node=… req=… session=…] message`` (traceback on the lines after)."""

    def format(self, record: logging.LogRecord) -> str:
        context = [f"node={getattr(record, 'node', None) or '-'}"]
        for key, short in (("request_id", "req"), ("session_id", "session")):
            value = getattr(record, key, None)
            if value is not None:
                context.append(f"{short}={value}")
        text = f"{_timestamp(record)} {record.levelname} {record.name} [{' '.join(context)}] {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        return logfilters.redact(text)


def formatter(kind: str) -> logging.Formatter:
    """The formatter of ``CHAT_LOG_FORMAT`` (``json`` or ``text``)."""
    return JsonFormatter() if kind == "json" else TextFormatter()


def configure(*, kind: str, level: str, node_id: str, stream: TextIO | None = None) -> logging.Handler:
    """Log every record of the process through one handler (on ``stream``, stderr by default)
    in format ``kind``.

    Replaces the root logger's handlers (``logging.basicConfig`` is not used) and makes
    uvicorn's loggers propagate to it; call before ``uvicorn.Config``, which is told not to
    configure logging itself (chat/server.py). Returns the handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(kind))
    handler.addFilter(ContextFilter(node_id))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    return handler


def failure_line(message: str, exit_code: int, *, node_id: str | None = None, problems: list[str] | None = None) -> str:
    """The JSON line of a start that failed: why, and the exit code the process leaves with."""
    record = logging.makeLogRecord({"name": "chat", "levelno": logging.CRITICAL, "levelname": "CRITICAL", "msg": message, "exit_code": exit_code})
    record.node = node_id
    line = orjson.loads(JsonFormatter().format(record))
    if problems is not None:
        line["problems"] = problems
    return orjson.dumps(line).decode()
