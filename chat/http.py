"""HTTP plumbing shared by the API and the WebSocket endpoint: tokens, bodies, error responses."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from chat.auth import TokenVerifier
from chat.errors import BadRequest, ChatError, RateLimited, TooLarge, close_code_for
from chat.models import Principal
from chat.ratelimit import KeyedLimiter


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: ChatError) -> Response:
    """The protocol's error body with the error's status (and ``Retry-After`` for 429/503)."""
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    return JSONResponse({"error": error.to_body()}, status_code=error.status, headers=headers)


async def deny_websocket(websocket: WebSocket, error: ChatError) -> None:
    """Refuse a WebSocket handshake with ``error``: an HTTP status and the protocol's body where the
    server supports the ASGI denial-response extension, else a close with the matching code."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(error))
    else:
        await websocket.close(close_code_for(error), error.message)


def bearer_token(headers: Mapping[str, str], raw_query: bytes | None = None) -> str | None:
    """The token from ``Authorization: Bearer …`` or, for browsers' WebSockets, ``?token=…``."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return None if raw_query is None else query_token(raw_query)


def query_token(raw_query: bytes) -> str | None:
    """The value of the query parameter named exactly ``token`` in the raw query string.

    Only that spelling: ``%74oken=`` decodes to the same name (Starlette's ``query_params``
    would return it), but log lines hold the raw URL, so a token under another spelling would be
    accepted and logged in clear. (chat/logfilters.py redacts every spelling all the same.)
    """
    for part in raw_query.split(b"&"):
        name, _, value = part.partition(b"=")
        if name == b"token":
            return unquote(value.decode("latin-1")) or None
    return None


class Authenticator:
    """Bearer token → :class:`Principal`, with the per-user HTTP rate limit."""

    def __init__(self, verifier: TokenVerifier, limiter: KeyedLimiter) -> None:
        self._verifier = verifier
        self._limiter = limiter

    def websocket(self, connection: HTTPConnection) -> Principal:
        """The caller of a WebSocket handshake (header, or ``?token=`` for browsers)."""
        return self._verifier.verify(bearer_token(connection.headers, connection.scope.get("query_string", b"")))

    def request(self, request: Request) -> Principal:
        """The caller of an HTTP request; refuses with ``rate_limited`` past the user's budget."""
        principal = self._verifier.verify(bearer_token(request.headers))
        wait_s = self._limiter.take(principal.user, time.monotonic())
        if wait_s:
            raise RateLimited("too many requests", retry_after_ms=int(wait_s * 1000) + 1)
        return principal


def is_loopback(connection: HTTPConnection) -> bool:
    """The peer is on this machine (127.0.0.0/8, ::1). Behind a proxy on the same machine every
    request is: decide nothing that matters in production by it."""
    client = connection.client
    if client is None:
        return False
    try:
        return ipaddress.ip_address(client.host).is_loopback
    except ValueError:
        return False


async def read_json_object(request: Request, *, cap: int) -> dict[str, Any]:
    """The request body as a JSON object (empty body: ``{}``), read with a size cap."""
    length = request.headers.get("content-length")
    if length is not None and length.isascii() and length.isdigit() and len(length) < 19 and int(length) > cap:
        raise TooLarge(f"request body is larger than {cap} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise TooLarge(f"request body is larger than {cap} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body
