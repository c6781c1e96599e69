"""Request IDs for every HTTP request, and the optional access log (``CHAT_ACCESS_LOG=1``).

:class:`AccessLog` is a pure ASGI middleware (no buffering, no task per request). For each HTTP
request it:

* takes the caller's ``X-Request-ID`` when it is a plain token (``[A-Za-z0-9._-]``, ≤ 64
  characters; a proxy's ID then follows the request through) or makes one, puts it in
  :data:`chat.logcontext.request_id` (so every line logged while serving the request carries it)
  and sends it back as ``X-Request-ID``;
* when enabled, logs one line once the response is sent: ``GET /v1/channels 200 3.1ms`` with
  ``method``, ``path`` (query string included, tokens redacted), ``status``, ``duration_ms`` and
  ``client`` as fields of their own in JSON.

WebSocket handshakes are not logged here: uvicorn logs each one (redacted, chat/logfilters.py).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chat import logcontext
from chat.logfilters import redact

log = logging.getLogger("chat.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class AccessLog:
    """ASGI middleware: request IDs always, access log lines when ``enabled``."""

    def __init__(self, app: ASGIApp, *, enabled: bool) -> None:
        self._app = app
        self._enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = logcontext.request_id.set(request_id)
        started = time.perf_counter()
        status = 500  # if the app fails before it answers, the server answers 500

        async def sender(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self._app(scope, receive, sender)
        finally:
            if self._enabled:
                self._log(scope, status, time.perf_counter() - started)
            logcontext.request_id.reset(token)

    @staticmethod
    def _log(scope: Scope, status: int, elapsed_s: float) -> None:
        query = scope.get("query_string", b"")
        path = scope.get("raw_path") or scope["path"].encode()
        target = redact((path + (b"?" + query if query else b"")).decode("latin-1"))
        client = scope.get("client")
        duration_ms = round(elapsed_s * 1000, 1)
        log.info(
            "%s %s %d %.1fms",
            scope["method"],
            target,
            status,
            duration_ms,
            extra={"method": scope["method"], "path": target, "status": status, "duration_ms": duration_ms, "client": client[0] if client else None},
        )


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex[:16]
