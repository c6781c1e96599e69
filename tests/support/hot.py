"""Clients and probes for the hot-room scenarios on real nodes: room readers that keep every
message they get, open-loop senders, delivery latency, the dynamic config in ZooKeeper, and
Cassandra's own count of writes per table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import websockets

from chat import dynamic
from tests.support import services

# Waiters for client progress: every frame a Reader or Sender handles wakes them.
_WAITERS: set[asyncio.Event] = set()


def _progress() -> None:
    for event in _WAITERS:
        event.set()


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait (bounded) until ``condition()`` holds, re-checking whenever a client handles a frame."""
    event = asyncio.Event()
    _WAITERS.add(event)
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                event.clear()
                await event.wait()
    except TimeoutError:
        raise AssertionError(f"no {what} within {timeout}s") from None
    finally:
        _WAITERS.discard(event)


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Reader:
    """A member's socket subscribed to one room: every message it gets (one by one or in batch
    frames), in arrival order, with the arrival time; a ``resync`` is followed by a subscribe
    with ``since`` (the protocol's recovery)."""

    def __init__(self, conn: websockets.ClientConnection, room: str) -> None:
        self.conn = conn
        self.room = room
        self.got: list[dict[str, Any]] = []
        self.arrived: list[float] = []
        self.batches = 0
        self.resyncs = 0
        self.other: list[dict[str, Any]] = []  # anything else (waiting-room frames …), with "_at": arrival
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, token: str, room: str | None) -> Reader:
        conn = await websockets.connect(f"{url}?token={token}", max_size=None)
        reader = cls(conn, room or "")
        assert orjson.loads(await asyncio.wait_for(conn.recv(), 10))["op"] == "hello"
        if room is not None:
            await conn.send(orjson.dumps({"op": "subscribe", "id": "s", "channels": [room]}).decode())
            assert orjson.loads(await asyncio.wait_for(conn.recv(), 10))["op"] == "subscribed"
        reader._task = asyncio.create_task(reader._run())
        return reader

    async def _run(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.conn:
                now = time.monotonic()
                frame = orjson.loads(raw)
                op = frame["op"]
                if op == "message" and frame["message"]["channel"] == self.room:
                    self.got.append(frame["message"])
                    self.arrived.append(now)
                elif op == "messages" and frame["channel"] == self.room:
                    self.batches += 1
                    self.got += frame["messages"]
                    self.arrived += [now] * len(frame["messages"])
                elif op == "resync":
                    self.resyncs += 1
                    since = max((m["id"] for m in self.got), key=int, default="0")
                    await self.conn.send(orjson.dumps({"op": "subscribe", "channels": [self.room], "since": {self.room: since}}).decode())
                elif op not in ("subscribed", "heartbeat_ack", "presence"):
                    frame["_at"] = now  # when it arrived (this clock)
                    self.other.append(frame)
                _progress()

    def ids(self) -> list[str]:
        return [m["id"] for m in self.got]

    async def close(self) -> None:
        await self.conn.close()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)


class Sender:
    """A member's socket sending to one room on an open-loop schedule (never waiting for acks).
    Each text carries its send time, so readers measure delivery latency on this clock."""

    def __init__(self, conn: websockets.ClientConnection, room: str, tag: str) -> None:
        self.conn, self.room, self.tag = conn, room, tag
        self.acked: dict[str, str] = {}  # client_msg_id → message ID
        self.errors: list[dict[str, Any]] = []
        self.sent = 0
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, token: str, room: str, tag: str) -> Sender:
        conn = await websockets.connect(f"{url}?token={token}")
        assert orjson.loads(await asyncio.wait_for(conn.recv(), 10))["op"] == "hello"
        sender = cls(conn, room, tag)
        sender._reader = asyncio.create_task(sender._read())
        return sender

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.conn:
                frame = orjson.loads(raw)
                if frame["op"] == "ack":
                    self.acked[frame["message"]["client_msg_id"]] = frame["message"]["id"]
                elif frame["op"] == "error":
                    self.errors.append(frame)
                _progress()

    async def run(self, rate: float, seconds: float) -> None:
        start, n, first = time.monotonic(), int(rate * seconds), self.sent
        for i in range(n):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            key = f"{self.tag}-{first + i}"  # keys go on across runs: a key used again would be a retry
            text = f"{time.monotonic():.6f} {key}"
            await self.conn.send(orjson.dumps({"op": "send", "id": key, "channel": self.room, "text": text, "client_msg_id": key}).decode())
            self.sent += 1

    def settled(self) -> bool:
        return len(self.acked) + len(self.errors) >= self.sent

    async def close(self) -> None:
        await self.conn.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)


def latencies(readers: list[Reader], since: float, until: float) -> list[float]:
    """Delivery latencies (s) of messages sent in [since, until), over every reader."""
    out = []
    for reader in readers:
        for message, arrived in zip(reader.got, reader.arrived, strict=True):
            sent = float(message["text"].split(" ", 1)[0])
            if since <= sent < until:
                out.append(arrived - sent)
    return out


def set_config(zk_hosts: str, changes: Mapping[str, object], root: str = "/chat") -> None:
    """Write dynamic settings the way ``ZooKeeperConfigStore.set`` does (validated, merged, CAS)."""
    from kazoo.client import KazooClient
    from kazoo.exceptions import BadVersionError

    checked = dynamic.SCHEMA.validate(changes)
    client = KazooClient(hosts=zk_hosts, timeout=10)
    client.start(15)
    try:
        path = f"{root}/config"
        client.ensure_path(path)
        for _ in range(20):
            data, stat = client.get(path)
            document = {**(json.loads(data) if data.strip() else {}), **checked}
            dynamic.SCHEMA.check_document(document)
            try:
                client.set(path, json.dumps(document, sort_keys=True).encode(), version=stat.version)
                return
            except BadVersionError:
                continue
        raise AssertionError("config kept changing")
    finally:
        client.stop()
        client.close()


def cassandra_writes(session: Any, table: str, keyspace: str = services.TEST_KEYSPACE) -> int:
    """Writes Cassandra applied to ``keyspace.table`` so far (a single-partition batch is one)."""
    rows = list(session.execute("SELECT count FROM system_views.local_write_latency WHERE keyspace_name = %s AND table_name = %s", (keyspace, table)))
    return int(rows[0].count) if rows else 0
