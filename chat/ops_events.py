"""``GET /v1/ops/events``: the dashboard's live feed, as Server-Sent Events (admin only).

Every :data:`INTERVAL_S` the stream carries one ``snapshot`` event: the JSON of
:meth:`chat.ops_view.OpsView.snapshot` (nodes, this node's health, counters, settings, hot
rooms). The dashboard reads it with ``fetch`` and an ``Authorization`` header — never a token
in the URL, where it would reach access logs.

Bounded on every side: at most :data:`MAX_STREAMS` streams per node and
:data:`MAX_STREAMS_PER_USER` per admin (429 ``rate_limited`` past them); a stream ends after
:data:`MAX_STREAM_S` (the dashboard reconnects, and its token is checked again, so an expired
or revoked token stops the feed); a client that does not read an event within
:data:`WRITE_TIMEOUT_S` is dropped. One task per stream, no queue: a slow reader holds one
snapshot at most.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from chat.errors import RateLimited
from chat.models import Principal

INTERVAL_S = 1.0
MAX_STREAMS = 32
MAX_STREAMS_PER_USER = 4
MAX_STREAM_S = 600.0
WRITE_TIMEOUT_S = 10.0


class OpsEvents:
    """The stream endpoint; ``admin`` authenticates a request (raising for non-admins)."""

    def __init__(self, *, admin: Callable[[Request], Principal], snapshot: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self._admin = admin
        self._snapshot = snapshot
        self._streams: dict[str, int] = {}  # user → open streams

    @property
    def open_streams(self) -> int:
        return sum(self._streams.values())

    async def stream(self, request: Request) -> Response:
        user = self._admin(request).user
        if self.open_streams >= MAX_STREAMS or self._streams.get(user, 0) >= MAX_STREAMS_PER_USER:
            raise RateLimited("too many open dashboard streams; close one", retry_after_ms=5000)
        self._streams[user] = self._streams.get(user, 0) + 1
        return _Stream(self, user)

    def release(self, user: str) -> None:
        """A stream of ``user`` ended: its slot is free again."""
        left = self._streams.get(user, 0) - 1
        if left > 0:
            self._streams[user] = left
        else:
            self._streams.pop(user, None)

    async def pump(self, send: Send, gone: asyncio.Event) -> None:
        """Send a snapshot every interval until the client goes or the stream's time is up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_STREAM_S
        while not gone.is_set() and loop.time() < deadline:
            body = b"event: snapshot\ndata: " + orjson.dumps(await self._snapshot()) + b"\n\n"
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await send({"type": "http.response.body", "body": body, "more_body": True})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), INTERVAL_S)


class _Stream(Response):
    """The ASGI response of one stream (a slot is held from creation until it ends)."""

    def __init__(self, events: OpsEvents, user: str) -> None:
        super().__init__(media_type="text/event-stream")
        self._feed = events
        self._user = user

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        try:
            headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"), (b"x-accel-buffering", b"no")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            with contextlib.suppress(TimeoutError, OSError):
                await self._feed.pump(send, gone)
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            self._feed.release(self._user)
