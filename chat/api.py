"""HTTP API for bots, clients and operators (PROTOCOL.md, "HTTP API")."""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat import auth, protocol
from chat.errors import BadRequest, ChatError, Internal, NotFound, RateLimited, TooLarge, Unauthorized, Unavailable
from chat.models import Principal
from chat.runtime import Runtime
from chat.ws import bearer_token

MAX_BODY_BYTES_FLOOR = 64 * 1024


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: ChatError) -> Response:
    headers = {}
    if error.retry_after_ms is not None:
        headers["Retry-After"] = str(max(1, -(-error.retry_after_ms // 1000)))
    return JSONResponse({"error": error.to_body()}, status_code=error.status, headers=headers)


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _principal(request: Request) -> Principal:
    runtime = _runtime(request)
    principal = runtime.verifier.verify(bearer_token(request.headers))
    wait_s = runtime.http_limiter.take(principal.user, time.monotonic())
    if wait_s:
        raise RateLimited("too many requests", retry_after_ms=int(wait_s * 1000) + 1)
    return principal


async def _json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, read with a size cap."""
    cap = max(MAX_BODY_BYTES_FLOOR, _runtime(request).settings.max_frame_bytes)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
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


def _channel_param(request: Request) -> int:
    return protocol.channel_ref(request.path_params["channel_id"])


def _query_id(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    return None if value in (None, "") else protocol.message_ref(value, name)


def _query_limit(request: Request) -> int:
    value = request.query_params.get("limit")
    if value in (None, ""):
        return protocol.HISTORY_DEFAULT
    if not value.isdigit():
        raise BadRequest(f"limit must be an integer from 1 to {protocol.HISTORY_MAX}")
    return protocol.history_limit(int(value))


# Endpoints


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    runtime = _runtime(request)
    failing: dict[str, str] = {}
    for name, check in (("store", runtime.store.ping), ("relay", runtime.relay.ping)):
        try:
            await check()
        except ChatError as error:
            failing[name] = error.message
        except Exception as error:  # noqa: BLE001 - readiness reports, never raises
            failing[name] = str(error) or type(error).__name__
    if runtime.draining:
        failing["node"] = "draining"
    if failing:
        return JSONResponse({"status": "unavailable", "failing": failing}, status_code=503)
    return JSONResponse({"status": "ready"})


async def list_channels(request: Request) -> Response:
    principal = _principal(request)
    service = _runtime(request).service
    channels = await service.list_channels(principal)
    positions = await service.read_positions(principal, [c.id for c in channels])
    body = []
    for channel in channels:
        wire = channel.to_wire()
        position = positions[channel.id]
        wire["last_read"] = None if position is None else str(position)
        body.append(wire)
    return JSONResponse({"channels": body})


async def create_channel(request: Request) -> Response:
    principal = _principal(request)
    body = await _json_body(request)
    channel, members = await _runtime(request).service.create_channel(
        principal, body.get("kind"), body.get("name"), body.get("members")  # type: ignore[arg-type]
    )
    return JSONResponse({"channel": channel.to_wire(members)}, status_code=201)


async def open_dm(request: Request) -> Response:
    principal = _principal(request)
    body = await _json_body(request)
    channel, created = await _runtime(request).service.open_dm(principal, body.get("user"))
    members = sorted(channel.dm_key.split("\n")) if channel.dm_key else None
    return JSONResponse({"channel": channel.to_wire(members)}, status_code=201 if created else 200)


async def get_channel(request: Request) -> Response:
    principal = _principal(request)
    channel, members, count = await _runtime(request).service.get_channel(principal, _channel_param(request))
    body = channel.to_wire(members)
    body["member_count"] = count
    return JSONResponse({"channel": body})


async def add_member(request: Request) -> Response:
    principal = _principal(request)
    channel_id = _channel_param(request)
    body = await _json_body(request)
    result = await _runtime(request).service.add_member(principal, channel_id, body.get("user"))
    return JSONResponse({"result": result.value, "user": body.get("user") or principal.user})


async def remove_member(request: Request) -> Response:
    principal = _principal(request)
    await _runtime(request).service.remove_member(principal, _channel_param(request), request.path_params["user"])
    return Response(status_code=204)


async def post_message(request: Request) -> Response:
    principal = _principal(request)
    channel_id = _channel_param(request)
    body = await _json_body(request)
    message, created = await _runtime(request).service.send(principal, channel_id, body.get("text"), body.get("client_msg_id"))  # type: ignore[arg-type]
    return JSONResponse({"message": message.to_wire()}, status_code=201 if created else 200)


async def get_messages(request: Request) -> Response:
    principal = _principal(request)
    page = await _runtime(request).service.history(
        principal,
        _channel_param(request),
        before=_query_id(request, "before"),
        after=_query_id(request, "after"),
        limit=_query_limit(request),
    )
    return JSONResponse({"messages": [m.to_wire() for m in page.messages], "has_more": page.has_more})


async def connect(request: Request) -> Response:
    principal = _principal(request)
    runtime = _runtime(request)
    node = await runtime.assign(principal.user)
    if node is None:
        raise Unavailable("no chat node can take a connection right now", retry_after_ms=2000)
    return JSONResponse({"url": node.url, "node_id": node.node_id})


async def dev_token(request: Request) -> Response:
    """Development sign-in by user name (only with a generated dev secret, never in production)."""
    runtime = _runtime(request)
    if not runtime.settings.dev_login_enabled:
        raise NotFound("development sign-in is disabled on this node")
    body = await _json_body(request)
    user = body.get("user")
    if not auth.valid_user_id(user):
        raise BadRequest("user must be 1-64 characters of [A-Za-z0-9_.-]")
    token = auth.issue_token(runtime.settings, user, ttl_s=12 * 3600)  # type: ignore[arg-type]
    return JSONResponse({"token": token, "user": user})


async def config_info(request: Request) -> Response:
    """What the web client needs to know before signing in."""
    settings = _runtime(request).settings
    return JSONResponse(
        {
            "node_id": settings.node_id,
            "dev_login": settings.dev_login_enabled,
            "max_message_chars": settings.max_message_chars,
            "group_max_members": settings.group_max_members,
        }
    )


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/v1/info", config_info, methods=["GET"]),
    Route("/v1/dev/token", dev_token, methods=["POST"]),
    Route("/v1/connect", connect, methods=["GET"]),
    Route("/v1/channels", list_channels, methods=["GET"]),
    Route("/v1/channels", create_channel, methods=["POST"]),
    Route("/v1/dms", open_dm, methods=["POST"]),
    Route("/v1/channels/{channel_id}", get_channel, methods=["GET"]),
    Route("/v1/channels/{channel_id}/members", add_member, methods=["POST"]),
    Route("/v1/channels/{channel_id}/members/{user}", remove_member, methods=["DELETE"]),
    Route("/v1/channels/{channel_id}/messages", post_message, methods=["POST"]),
    Route("/v1/channels/{channel_id}/messages", get_messages, methods=["GET"]),
]


# Error mapping: every failure leaves as the protocol's error body.


async def chat_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ChatError)
    return error_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: ChatError = NotFound("no such endpoint")
    elif exc.status_code == 401:
        error = Unauthorized(str(exc.detail))
    else:
        error = BadRequest(str(exc.detail))
    response = error_response(error)
    response.status_code = exc.status_code
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    return error_response(Internal("internal error"))
