"""Many member sockets of one room, or a flood of sends, in a process of their own, so that a busy
room's traffic does not slow down the test's own event loop (where latency is measured).

The sockets are the benchmark harness's lean client (``bench.harness.wire``). Each keeps the IDs
of the room's messages it received, in arrival order (single frames and ``messages`` batches),
counts batch frames and ``resync``s, and answers a ``resync`` with the protocol's recovery: a
subscribe with ``since`` = the newest ID it has.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import orjson

Job = tuple[str, int, str, str]  # host, port, path (token included), room


@dataclass
class Member:
    ids: list[str] = field(default_factory=list)
    batches: int = 0
    resyncs: int = 0


def _worker(conn: Connection, jobs: list[Job]) -> None:
    asyncio.run(_serve(conn, jobs))


async def _serve(conn: Connection, jobs: list[Job]) -> None:
    from bench.harness.wire import connect, json_frame

    members = [Member() for _ in jobs]
    peers: list[Any] = []

    def handler(member: Member, room: str) -> Any:
        def on_frame(payload: bytes, now: float) -> None:
            if payload.startswith(b'{"op":"message",'):
                message = orjson.loads(payload)["message"]
                if message["channel"] == room:
                    member.ids.append(message["id"])
            elif payload.startswith(b'{"op":"messages",'):
                member.batches += 1
                member.ids += [m["id"] for m in orjson.loads(payload)["messages"]]
            elif payload.startswith(b'{"op":"resync"'):
                member.resyncs += 1
                since = max(member.ids, key=int, default="0")
                peers[members.index(member)].send(json_frame({"op": "subscribe", "channels": [room], "since": {room: since}}))

        return on_frame

    try:
        for member, (host, port, path, room) in zip(members, jobs, strict=True):
            peers.append(await connect(host, port, path, handler(member, room), channels=[room]))
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        conn.send(("failed", repr(exc)))
        return
    conn.send(("ready", len(peers)))
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command == "report":
            conn.send([(m.ids, m.batches, m.resyncs) for m in members])
        else:
            for peer in peers:
                peer.close()
            conn.send("stopped")
            return


class Crowd:
    """``jobs`` held open by one worker process (``async with``: connected and subscribed)."""

    def __init__(self, jobs: list[Job]) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker, args=(child, jobs), daemon=True)

    async def _ask(self, command: str | None, timeout_s: float) -> Any:
        if command is not None:
            self._conn.send(command)
        ready = await asyncio.to_thread(self._conn.poll, timeout_s)
        assert ready, f"the crowd did not answer {command!r} within {timeout_s}s"
        return self._conn.recv()

    async def __aenter__(self) -> Crowd:
        self._proc.start()
        answer = await self._ask(None, 120)
        assert answer[0] == "ready", answer
        return self

    async def members(self) -> list[Member]:
        return [Member(ids, batches, resyncs) for ids, batches, resyncs in await self._ask("report", 30)]

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._ask("stop", 10)
        finally:
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()


FloodJob = tuple[str, int, str, str, float, float, str]  # host, port, path, channel, rate, seconds, tag


def _flood_worker(conn: Connection, jobs: list[FloodJob]) -> None:
    conn.send(asyncio.run(_flood(jobs)))


async def _flood(jobs: list[FloodJob]) -> dict[str, Any]:
    """Every job: one socket sending to its channel on an open-loop schedule; then wait (bounded)
    for every answer. Returns the acks, the refusals by code, and whether each carried retry_after_ms."""
    from bench.harness.wire import connect, json_frame

    out: dict[str, Any] = {"sent": 0, "acked": 0, "refused": {}, "without_retry": 0}
    answered = asyncio.Event()

    def on_frame(payload: bytes, now: float) -> None:
        if payload.startswith(b'{"op":"ack"'):
            out["acked"] += 1
        elif payload.startswith(b'{"op":"error"'):
            error = orjson.loads(payload)
            out["refused"][error["code"]] = out["refused"].get(error["code"], 0) + 1
            out["without_retry"] += "retry_after_ms" not in error
        else:
            return
        if out["acked"] + sum(out["refused"].values()) >= out["sent"]:
            answered.set()

    peers = [await connect(host, port, path, on_frame) for host, port, path, *_ in jobs]

    async def send(peer: Any, channel: str, rate: float, seconds: float, tag: str) -> None:
        start = loop.time()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            out["sent"] += 1
            peer.send(json_frame({"op": "send", "id": i, "channel": channel, "text": f"flood {i}", "client_msg_id": f"{tag}-{i}"}))

    loop = asyncio.get_running_loop()
    await asyncio.gather(*(send(p, *job[3:]) for p, job in zip(peers, jobs, strict=True)))
    try:
        await asyncio.wait_for(answered.wait(), 60)
    except TimeoutError:
        out["unanswered"] = out["sent"] - out["acked"] - sum(out["refused"].values())
    for peer in peers:
        peer.close()
    return out


async def flood(jobs: list[FloodJob]) -> dict[str, Any]:
    """Run ``jobs`` in a process of their own; their summary once every send is answered (bounded)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_flood_worker, args=(child, jobs), daemon=True)
    proc.start()
    try:
        ready = await asyncio.to_thread(parent.poll, 120)
        assert ready, "the flood did not finish in time"
        summary: dict[str, Any] = parent.recv()
        return summary
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
