"""Typed errors and their protocol codes, and WebSocket close codes: the one place both are mapped.

Every refusal the server makes, on HTTP or WebSocket, is a :class:`ChatError`
carrying one of the protocol's codes::

    ChatError                      code            HTTP
    ├── BadRequest                 bad_request     400
    │   └── RequestTimeout                         408  (the request head did not arrive in time)
    ├── Unauthorized               unauthorized    401
    ├── Forbidden                  forbidden       403
    ├── NotFound                   not_found       404
    ├── TooLarge                   too_large       413
    │   ├── UriTooLong                             414  (request line over the cap)
    │   └── HeadersTooLarge                        431  (a header line, the header count or the head over the cap)
    ├── RateLimited                rate_limited    429  (per connection / per user)
    ├── Throttled                  throttled       429  (per room: hot-room protection)
    ├── Unavailable                unavailable     503  (a backend failed, timed out or is shielded)
    │   └── ClockMovedBackwards
    └── Internal                   internal        500

Adapters translate their driver's exceptions into :class:`Unavailable` at the port
boundary, so the core and the endpoints never see a driver exception. The ``presence``
and ``discovery`` packages (which cannot import ``chat``) raise their own typed errors;
:func:`translate` maps those.

A node that cannot start raises :class:`StartupError` with an :class:`ExitCode`: the process
prints one line and exits with that code (``chat serve``'s exit codes are listed there).

WebSocket close codes (:class:`CloseCode`) are split by range so a client decides by the
code alone: *reconnect* codes (1001, 1011, 4503) mean "come back, perhaps to
another node"; *terminal* codes (1008, 1009, 4401, 4403) mean "do not reconnect as you
are": fix the behaviour, or get a new token first (4401).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, ClassVar

from discovery.errors import ConfigRejected, DiscoveryError
from presence.store.base import PresenceUnavailable

#: A client's request ``id`` as it was sent: echoed on the reply (any string or number).
FrameId = str | int | float | None


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
        # The WebSocket request this error answers, echoed as ``id`` on the error frame.
        self.frame_id: FrameId = None

    def answering(self, frame_id: FrameId) -> ChatError:
        """This error, marked as the answer to request ``frame_id`` (returns ``self``)."""
        self.frame_id = frame_id
        return self

    @property
    def retry_after_s(self) -> int | None:
        """``retry_after_ms`` as the ``Retry-After`` header's whole seconds (rounded up, at least 1)."""
        return None if self.retry_after_ms is None else max(1, -(-self.retry_after_ms // 1000))

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


class RequestTimeout(BadRequest):
    status = 408


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


class UriTooLong(TooLarge):
    status = 414


class HeadersTooLarge(TooLarge):
    status = 431


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


def translate(exc: Exception) -> ChatError:
    """The protocol error for an error of the presence or discovery package (or any other:
    ``internal``). The one place these are mapped."""
    if isinstance(exc, ChatError):
        return exc
    if isinstance(exc, ConfigRejected):
        return BadRequest("; ".join(exc.problems))
    if isinstance(exc, DiscoveryError):
        return Unavailable(exc.message, retry_after_ms=exc.retry_after_ms or 1000)
    if isinstance(exc, PresenceUnavailable):
        return Unavailable("presence is unavailable right now", retry_after_ms=1000)
    return Internal("internal error")


class CloseCode(IntEnum):
    """WebSocket close codes this server sends (RFC 6455 plus an application range)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the node is draining or shutting down: reconnect (ask /v1/connect)
    POLICY = 1008  # abusive client: flooding, not reading its replies
    TOO_BIG = 1009  # a frame over the cap, or repeated oversize messages
    INTERNAL = 1011  # the server failed this socket: reconnect
    UNAUTHORIZED = 4401  # bad or expired token: get a new one before reconnecting
    FORBIDDEN = 4403  # refused for who the caller is (a handshake that cannot carry a 403)
    UNAVAILABLE = 4503  # the node cannot take this socket now (draining, overloaded): reconnect

    @property
    def reconnect(self) -> bool:
        """True for codes after which a client should reconnect (with backoff)."""
        return self in (CloseCode.GOING_AWAY, CloseCode.INTERNAL, CloseCode.UNAVAILABLE)


def close_code_for(error: ChatError) -> CloseCode:
    """The close code for a handshake refused with ``error`` where no HTTP status can be sent."""
    if isinstance(error, Unauthorized):
        return CloseCode.UNAUTHORIZED
    if isinstance(error, Unavailable):
        return CloseCode.UNAVAILABLE
    if isinstance(error, Forbidden):
        return CloseCode.FORBIDDEN
    return CloseCode.POLICY


class ExitCode(IntEnum):
    """Exit codes of ``chat`` (docs/operations.md lists them): one per way a start can fail."""

    OK = 0
    FAILED = 1  # anything not listed below (a bug: the log has its traceback)
    CONFIG = 2  # invalid configuration, or a command used wrongly
    PORT_IN_USE = 3  # cannot listen on CHAT_HOST:CHAT_PORT
    DATA_DIR = 4  # the data dir is in use by another node, or its database cannot be opened
    REDIS = 5  # Redis (CHAT_REDIS_URL) cannot be reached
    CASSANDRA = 6  # Cassandra (CHAT_CASSANDRA_HOSTS) cannot be reached or used
    ZOOKEEPER = 7  # ZooKeeper (CHAT_ZOOKEEPER_HOSTS) cannot be reached, or no worker ID is free


class StartupError(Exception):
    """The node cannot start: ``str(error)`` is the one line to print, ``exit_code`` the exit status."""

    def __init__(self, exit_code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
