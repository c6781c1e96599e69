"""The WebSocket endpoint: authenticate the handshake, then run a Session until the socket goes."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.websockets import WebSocket

from chat import logcontext
from chat.errors import ChatError, RateLimited, Unavailable
from chat.flusher import Flusher
from chat.handlers import Gateway
from chat.http import Authenticator, deny_websocket
from chat.metrics.counters import WireCounters
from chat.node import Node
from chat.ratelimit import KeyedLimiter
from chat.session import Session, SessionLimits
from chat.wsproto import direct_socket

log = logging.getLogger(__name__)


class StarletteTransport:
    """Session ↔ ASGI: one ASGI event per frame."""

    __slots__ = ("_ws", "peer_code")

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        # The code the client closed with (1006: the connection dropped without a close frame).
        self.peer_code: int | None = None

    async def receive(self) -> str | bytes | None:
        while True:
            event = await self._ws.receive()
            kind = event["type"]
            if kind == "websocket.receive":
                text = event.get("text")
                return text if text is not None else event.get("bytes") or b""
            if kind == "websocket.disconnect":
                self.peer_code = event.get("code", 1005)
                return None

    async def send_text(self, data: str) -> None:
        await self._ws.send({"type": "websocket.send", "text": data})

    async def close(self, code: int, reason: str = "") -> None:
        await self._ws.close(code, reason)


class WebSocketEndpoint:
    """``GET /v1/ws``: its dependencies are what it is built with.

    Before a socket is accepted: at most ``handshakes`` per client address (a token bucket), a
    valid token, a node that is not draining, and fewer than ``max_sockets_per_user`` sockets
    of that user here. Each refusal is the protocol's error as the handshake's HTTP response,
    counted by reason in ``counters.handshakes_refused``.
    """

    def __init__(
        self,
        *,
        auth: Authenticator,
        gateway: Gateway,
        node: Node,
        limits: SessionLimits,
        handshakes: KeyedLimiter,
        max_sockets_per_user: int,
        counters: WireCounters | None = None,
    ) -> None:
        self._auth = auth
        self._gateway = gateway
        self._node = node
        self._limits = limits
        self._handshakes = handshakes
        self._max_sockets_per_user = max_sockets_per_user
        self._flusher = Flusher()
        # Sessions' reader tasks on the direct path (held: a task nobody references may vanish).
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters = counters if counters is not None else WireCounters()

    async def serve(self, websocket: WebSocket) -> None:
        reason = "address_rate"  # why it is refused, if it is (one of HANDSHAKE_REFUSALS: the metrics label)
        try:
            self._admit(websocket)
            reason = "unauthorized"
            principal = self._auth.websocket(websocket)
            if self._node.draining:
                reason = "draining"
                raise Unavailable("this node is draining; ask /v1/connect for another", retry_after_ms=1000)
            if self._node.sockets_of(principal.user) >= self._max_sockets_per_user:
                reason = "user_sockets"
                raise RateLimited(f"at most {self._max_sockets_per_user} open sockets per user", retry_after_ms=5000)
        except ChatError as error:
            refused = self.counters.handshakes_refused
            refused[reason] = refused.get(reason, 0) + 1
            await deny_websocket(websocket, error)
            return
        await websocket.accept()
        # The handshake's headers (a kilobyte or two, the token among them) are not needed again.
        del websocket.scope["headers"][:]
        self.counters.connections_opened += 1
        direct = direct_socket(websocket.scope)
        session = Session(
            StarletteTransport(websocket),
            principal,
            limits=self._limits,
            handler=self._gateway.handle,
            inline=self._gateway.handle_now,
            direct=direct,
            flusher=self._flusher if direct is not None else None,
            counters=self.counters,
        )
        logcontext.session_id.set(session.session_id)  # this connection's task and its children log it
        self._node.add(session)
        if direct is not None:
            # The direct path: the session gets a reader task of its own and this ASGI call
            # returns, so an idle socket keeps no ASGI stack (DirectSocket.run_asgi leaves it open).
            task = asyncio.get_running_loop().create_task(self._live(session), name=f"ws-{session.session_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await asyncio.shield(session.opened)
            return
        await self._live(session)

    async def _live(self, session: Session) -> None:
        """A socket's whole life after the handshake: hello, frames until it goes, cleanup."""
        try:
            await self._gateway.open(session)
            session.opened.set_result(None)
            await session.run()
        except Exception:
            log.exception("websocket session %s failed", session.session_id)
        finally:
            if not session.opened.done():
                session.opened.set_result(None)
            self._node.discard(session)
            await self._gateway.close(session)

    def _admit(self, websocket: WebSocket) -> None:
        """The per-address handshake rate (before the token is even looked at)."""
        address = websocket.client.host if websocket.client is not None else "-"
        wait_s = self._handshakes.take(address, time.monotonic())
        if wait_s:
            raise RateLimited("too many connection attempts from your address", retry_after_ms=int(wait_s * 1000) + 1)
