"""Which request or socket a log line belongs to, carried in context variables.

Set where a request or a socket begins (chat/accesslog.py for HTTP requests, chat/ws.py for
WebSocket sessions); asyncio copies the context into every task started from there, so each
log line written on their behalf carries the ID, and :class:`chat.logsetup.ContextFilter`
adds it to the record. Context variables are module-level by nature: they hold no state of
their own, only a per-context slot.
"""

from __future__ import annotations

from contextvars import ContextVar

#: The HTTP request being served (its ``X-Request-ID``), if any.
request_id: ContextVar[str | None] = ContextVar("chat_request_id", default=None)
#: The WebSocket session being served (the ``session_id`` its ``hello`` told the client), if any.
session_id: ContextVar[str | None] = ContextVar("chat_session_id", default=None)
