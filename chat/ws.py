"""The WebSocket endpoint: authenticate the handshake, then pump frames into a Session."""

from __future__ import annotations

import logging
from typing import Any

from starlette.websockets import WebSocket

from chat.errors import ChatError, Unavailable
from chat.runtime import Runtime
from chat.session import Session

log = logging.getLogger(__name__)


class StarletteTransport:
    """Session ↔ ASGI: sends go straight to the server's ``send`` (one ASGI event per frame)."""

    __slots__ = ("_ws",)

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket

    async def send_text(self, data: str) -> None:
        await self._ws.send({"type": "websocket.send", "text": data})

    async def close(self, code: int, reason: str = "") -> None:
        await self._ws.close(code, reason)


def bearer_token(headers: Any, query: Any | None = None) -> str | None:
    """The token from ``Authorization: Bearer …`` or, for browsers, ``?token=…``."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    if query is not None:
        return query.get("token") or None
    return None


async def _deny(websocket: WebSocket, error: ChatError) -> None:
    from chat.api import error_response

    # The ASGI denial-response extension lets the handshake fail with a real HTTP status.
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(error))
    else:
        await websocket.close(4401 if error.status == 401 else 1008, error.message)


async def ws_endpoint(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.runtime
    try:
        principal = runtime.verifier.verify(bearer_token(websocket.headers, websocket.query_params))
    except ChatError as error:
        await _deny(websocket, error)
        return
    if runtime.draining:
        await _deny(websocket, Unavailable("this node is draining; ask /v1/connect for another", retry_after_ms=1000))
        return
    await websocket.accept()
    session = Session(
        StarletteTransport(websocket),
        principal,
        service=runtime.service,
        hub=runtime.hub,
        presence=runtime.presence,
        node_id=runtime.settings.node_id,
    )
    runtime.sessions.add(session)
    try:
        await session.start()
        receive = websocket.receive
        while session.close_code is None:
            event = await receive()
            kind = event["type"]
            if kind == "websocket.receive":
                data = event.get("text")
                await session.receive(data if data is not None else event.get("bytes") or b"")
            elif kind == "websocket.disconnect":
                break
    except Exception:  # noqa: BLE001 - one socket's failure must not take the node down
        log.exception("websocket session %s failed", session.session_id)
    finally:
        runtime.sessions.discard(session)
        await session.stop()
