"""A WebSocket test client that speaks PROTOCOL.md, with bounded waits everywhere."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
import websockets

DEFAULT_TIMEOUT = 10.0


class WsClient:
    def __init__(self, conn: websockets.ClientConnection) -> None:
        self.conn = conn
        self.hello: dict[str, Any] = {}
        self._ids = itertools.count(1)
        # Frames read while waiting for another one; nothing read is ever thrown away.
        self.backlog: list[dict[str, Any]] = []
        # The rest of a batch frame being handed out, and how many batch frames came.
        self._split: list[dict[str, Any]] = []
        self.batches = 0

    @classmethod
    async def connect(cls, url: str, token: str, *, via_header: bool = False, **kwargs: Any) -> WsClient:
        if via_header:
            conn = await websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}, **kwargs)
        else:
            conn = await websockets.connect(f"{url}?token={token}", **kwargs)
        client = cls(conn)
        client.hello = await client.expect("hello")
        return client

    async def close(self) -> None:
        await self.conn.close()

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, op: str, **fields: Any) -> Any:
        """Send a frame with a fresh ``id`` (returned)."""
        frame_id = fields.pop("id", None) or f"r{next(self._ids)}"
        await self.conn.send(orjson.dumps({"op": op, "id": frame_id, **fields}).decode())
        return frame_id

    async def send_raw(self, data: str | bytes) -> None:
        await self.conn.send(data)

    async def recv(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        return await self._read(timeout)

    async def _read(self, timeout: float) -> dict[str, Any]:
        """The next frame off the socket. A hot room's ``messages`` batch is handed out as the
        ``message`` frames it stands for, one per call (the protocol lets a server send either)."""
        if self._split:
            return self._split.pop(0)
        frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.conn.recv(), timeout))
        if frame.get("op") == "messages" and frame.get("messages"):
            self.batches += 1
            frame, *self._split = [{"op": "message", "type": "message", "message": m} for m in frame["messages"]]
        return frame

    async def expect(self, op: str, timeout: float = DEFAULT_TIMEOUT, **match: Any) -> dict[str, Any]:
        """The next frame with this op (and fields); other frames stay in the backlog for later."""
        for i, frame in enumerate(self.backlog):
            if frame.get("op") == op and all(frame.get(k) == v for k, v in match.items()):
                return self.backlog.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no {op} {match} within {timeout}s; backlog: {self.backlog[-5:]}")
            frame = await self._read(remaining)
            if frame.get("op") == op and all(frame.get(k) == v for k, v in match.items()):
                return frame
            self.backlog.append(frame)

    async def request(self, op: str, reply: str | None = None, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send and wait for the reply with the same id (an ``error`` reply is returned too)."""
        frame_id = await self.send(op, **fields)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for i, frame in enumerate(self.backlog):
            if frame.get("id") == frame_id:
                return self.backlog.pop(i)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no reply to {op} {frame_id} within {timeout}s")
            frame = await self._read(remaining)
            if frame.get("id") == frame_id and (reply is None or frame.get("op") in (reply, "error")):
                return frame
            self.backlog.append(frame)

    async def messages(self, count: int, channel: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
        """The next ``count`` message objects (optionally of one channel), in arrival order."""
        out: list[dict[str, Any]] = []
        while len(out) < count:
            frame = await self.expect("message", timeout)
            if channel is None or frame["message"]["channel"] == channel:
                out.append(frame["message"])
        return out

    async def drain_nothing(self, timeout: float = 0.3) -> list[dict[str, Any]]:
        """Whatever arrives within ``timeout`` (used to assert that nothing more comes)."""
        got = list(self.backlog)
        self.backlog.clear()
        try:
            while True:
                got.append(await self._read(timeout))
        except TimeoutError:
            return got
