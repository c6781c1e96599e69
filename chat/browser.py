"""What browsers are told and allowed: security headers, and which origins may use the node.

* Every HTTP response carries :data:`SECURITY_HEADERS`: a Content-Security-Policy fitted to the
  web client (chat/web: its own script and style files only, no inline code; ``data:`` images
  for the favicon; WebSockets to this node or, after a ``reconnect``, another one), no framing
  (``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``), ``nosniff`` and no referrer.
* :class:`Origins` is the ``CHAT_ALLOWED_ORIGINS`` policy. A request without an ``Origin``
  header (curl, bots, native clients) and a same-origin one (``Origin`` names the ``Host`` it
  was sent to) are allowed; any other origin only if listed. A WebSocket handshake or an HTTP
  request from an origin not allowed is refused ``403 forbidden`` with the protocol's body
  (browsers send ``Origin`` on every cross-origin request and on every WebSocket handshake).
  Listed origins get CORS: preflight ``OPTIONS`` is answered, responses carry
  ``Access-Control-Allow-Origin``.

:class:`BrowserGuard` is the pure ASGI middleware doing all of it (not Starlette's
``BaseHTTPMiddleware``, which would buffer responses and cost a task per request).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from chat.errors import Forbidden
from chat.http import deny_websocket, error_response

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self' ws: wss:",  # a `reconnect` frame may name another node of the cluster
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
CORS_METHODS = b"GET, POST, PUT, DELETE"
CORS_HEADERS = b"authorization, content-type"
CORS_MAX_AGE_S = 600
_DEFAULT_PORTS = {"http": ":80", "https": ":443", "ws": ":80", "wss": ":443"}


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port; None if it is not one."""
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc.removesuffix(_DEFAULT_PORTS[parts.scheme])}"


class Origins:
    """The browser origins allowed to use this node (see the module docstring)."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self._allowed = frozenset(o for o in map(normalize_origin, allowed) if o is not None)

    def listed(self, origin: str) -> bool:
        """``origin`` is in CHAT_ALLOWED_ORIGINS (it gets CORS headers)."""
        return normalize_origin(origin) in self._allowed

    def allows(self, origin: str | None, host: str | None) -> bool:
        """A request with this ``Origin`` header (None: none sent) to this ``Host`` may proceed."""
        if origin is None or self.listed(origin):
            return True
        normalized = normalize_origin(origin)
        if normalized is None or not host:
            return False
        scheme, _, netloc = normalized.partition("://")
        return netloc == host.strip().lower().removesuffix(_DEFAULT_PORTS[scheme])


class BrowserGuard:
    """ASGI middleware: security headers, the origin check, and CORS for listed origins."""

    def __init__(self, app: ASGIApp, *, origins: Origins) -> None:
        self._app = app
        self._origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        headers = HTTPConnection(scope).headers
        origin = headers.get("origin")
        refusal = None
        if not self._origins.allows(origin, headers.get("host")):
            refusal = Forbidden(f"origin {str(origin)[:100]!r} is not allowed here")
        if scope["type"] == "websocket":
            if refusal is not None:
                await deny_websocket(WebSocket(scope, receive, send), refusal)
                return
            await self._app(scope, receive, send)
            return
        cors = origin is not None and refusal is None and self._origins.listed(origin)
        if refusal is not None:
            await self._with_headers(error_response(refusal), origin=None)(scope, receive, send)
            return
        if cors and scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._with_headers(_preflight(), origin=origin)(scope, receive, send)
            return
        await self._app(scope, receive, self._sender(send, origin if cors else None))

    def _sender(self, send: Send, origin: str | None) -> Send:
        async def sender(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_extra_headers(origin)]}
            await send(message)

        return sender

    def _with_headers(self, response: ASGIApp, *, origin: str | None) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await response(scope, receive, self._sender(send, origin))

        return app


def _preflight() -> ASGIApp:
    headers = {
        "access-control-allow-methods": CORS_METHODS.decode(),
        "access-control-allow-headers": CORS_HEADERS.decode(),
        "access-control-max-age": str(CORS_MAX_AGE_S),
    }
    return Response(status_code=204, headers=headers)


def _extra_headers(origin: str | None) -> list[tuple[bytes, bytes]]:
    if origin is None:
        return SECURITY_HEADERS
    return [*SECURITY_HEADERS, (b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
