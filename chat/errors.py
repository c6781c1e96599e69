"""Typed errors and their protocol codes — the one place where they are mapped.

Every refusal the server makes, on HTTP or WebSocket, is a :class:`ChatError`
carrying one of the protocol's codes::

    ChatError                      code            HTTP
    ├── BadRequest                 bad_request     400
    ├── Unauthorized               unauthorized    401
    ├── Forbidden                  forbidden       403
    ├── NotFound                   not_found       404
    ├── TooLarge                   too_large       413
    ├── RateLimited                rate_limited    429  (per connection / per user)
    ├── Throttled                  throttled       429  (per room, hot-room protection)
    ├── Unavailable                unavailable     503  (a backend failed or timed out)
    └── Internal                   internal        500

Adapters translate their driver's exceptions into :class:`Unavailable` at the
port boundary, so the core and the endpoints never see a driver exception.

WebSocket close codes are split by range so a client can decide by code alone:
``1000``-``1015`` are RFC 6455's; ``4401`` means "get a new token", ``4000``-``4099``
mean "reconnect (maybe elsewhere)", anything else in ``1008``/``1009`` is terminal
for that client's behaviour (abuse).
"""

from __future__ import annotations

from typing import Any, ClassVar


class ChatError(Exception):
    """Base of every error the protocol can report."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str = "", *, retry_after_ms: int | None = None, **extra: Any) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code.replace("_", " ")
        # Only meaningful with 429/503; sent as a body field and a Retry-After header.
        self.retry_after_ms = retry_after_ms
        # Extra fields echoed on the error frame (e.g. the channel of a failed subscribe).
        self.extra = extra

    def to_body(self) -> dict[str, Any]:
        """The protocol's error object (without the WebSocket frame envelope)."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after_ms is not None:
            body["retry_after_ms"] = self.retry_after_ms
        body.update(self.extra)
        return body


class BadRequest(ChatError):
    code = "bad_request"
    status = 400


class Unauthorized(ChatError):
    code = "unauthorized"
    status = 401


class Forbidden(ChatError):
    code = "forbidden"
    status = 403


class NotFound(ChatError):
    code = "not_found"
    status = 404


class TooLarge(ChatError):
    code = "too_large"
    status = 413


class RateLimited(ChatError):
    code = "rate_limited"
    status = 429


class Throttled(ChatError):
    code = "throttled"
    status = 429


class Unavailable(ChatError):
    code = "unavailable"
    status = 503


class Internal(ChatError):
    code = "internal"
    status = 500


class ClockMovedBackwards(Unavailable):
    """The wall clock went back further than the ID generator is willing to wait out."""


# WebSocket close codes (RFC 6455 plus an application range).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # server shutting down / draining
CLOSE_POLICY = 1008  # abusive client: flooding, repeated bad frames
CLOSE_TOO_BIG = 1009  # frame larger than the cap
CLOSE_INTERNAL = 1011
CLOSE_UNAUTHORIZED = 4401  # bad or expired token: get a new one before reconnecting
CLOSE_PING_TIMEOUT = 4000  # half-open socket: reconnect
