"""What runs inside a crowd's worker processes: the sockets' tally, heartbeats, and the two
receiving clients.

* ``epoll`` (default): handshakes one by one (blocking, ~1 ms each on loopback), then one
  ``epoll`` loop, one ``recv(65536)`` and one parse pass per ready socket, no asyncio. About half
  the CPU per frame of the asyncio flavour, so the load generator stays cheaper than the node.
* ``asyncio``: :class:`bench.harness.wire.Peer` sockets, 64 handshakes in flight, for comparison.

A worker answers the benchmark over a pipe: ``("stats", step, lo, hi)`` → its counts,
``("stop",)`` → closes its sockets and says ``"stopped"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson

from bench.harness import wire
from bench.harness.measure import Histogram


@dataclass(frozen=True)
class Job:
    """One socket to open: its path (with the token), the channels it subscribes to, its source address."""

    path: str
    channels: tuple[str, ...]
    source: str | None = None


def stamp(step: int, due: float, pad: str) -> str:
    """A benchmark message's text: the step and its scheduled (monotonic) send time. CLOCK_MONOTONIC
    is system-wide, so any process of the load generator can measure latency from it."""
    return f"{step}:{due:.6f}:{pad}"


def read_stamp(data: bytes, k: int) -> tuple[int, float]:
    """The ``(step, due)`` of a :func:`stamp` starting at ``data[k]``."""
    a = data.find(b":", k)
    b = data.find(b":", a + 1)
    return int(data[k:a]), float(data[a + 1 : b])


class Tally:
    """What one worker's sockets received: latency per step, arrivals per millisecond, trouble."""

    def __init__(self) -> None:
        self.hists: dict[int, Histogram] = {}
        self.bins: dict[int, int] = {}
        self.resyncs = self.errors = self.heartbeat_acks = 0

    def text(self, data: bytes, start: int, end: int, now: float) -> bool:
        """Account for the payload ``data[start:end]``; True for ``hello``/``subscribed`` (readiness)."""
        if data.startswith(b'{"op":"message",', start):
            self._delivered(data, data.find(b'"text":"', start) + 8, now)
        elif data.startswith(b'{"op":"messages",', start):  # a batch (hot rooms): rarer, parse it
            for m in orjson.loads(data[start:end])["messages"]:
                self._delivered(m["text"].encode(), 0, now)
        elif data.startswith(b'{"op":"heartbeat_ack"', start):
            self.heartbeat_acks += 1
        elif data.startswith(b'{"op":"hello"', start) or data.startswith(b'{"op":"subscribed"', start):
            return True
        elif data.startswith(b'{"op":"resync"', start):
            self.resyncs += 1
        elif data.startswith(b'{"op":"error"', start):
            self.errors += 1
        return False

    def _delivered(self, data: bytes, k: int, now: float) -> None:
        step, due = read_stamp(data, k)
        hist = self.hists.get(step)
        if hist is None:
            hist = self.hists[step] = Histogram()
        hist.record(now - due)
        key = int(now * 1000)
        self.bins[key] = self.bins.get(key, 0) + 1

    def stats(self, step: int, lo: float, hi: float, closed: int) -> dict[str, Any]:
        """Latency of ``step``, arrivals within ``[lo, hi)`` (monotonic seconds), running counts."""
        hist = self.hists.get(step)
        received = sum(c for k, c in self.bins.items() if lo * 1000 <= k < hi * 1000)
        return {
            "received": received,
            "hist": hist.to_dict() if hist else None,
            "resyncs": self.resyncs,
            "errors": self.errors,
            "closed": closed,
            "heartbeat_acks": self.heartbeat_acks,
        }


class Beats:
    """Heartbeats of ``n`` sockets every ``interval_s``, spread evenly over the interval."""

    def __init__(self, n: int, interval_s: float) -> None:
        self.n = n
        self.gap = interval_s / n if n and interval_s > 0 else 0.0
        self.t0 = time.monotonic()
        self.sent = 0

    def due(self, now: float) -> list[int]:
        """Indices of the sockets whose beat is due (all of them after a stall: catch up)."""
        if not self.gap:
            return []
        upto = int((now - self.t0) / self.gap)
        out = [k % self.n for k in range(self.sent, upto)]
        self.sent = max(self.sent, upto)
        return out

    def wait_s(self, now: float) -> float:
        return 1.0 if not self.gap else max(0.0, min(1.0, self.t0 + (self.sent + 1) * self.gap - now))


def _answer(conn: Connection, cmd: tuple[Any, ...], tally: Tally, closed: int) -> bool:
    """One command from the benchmark; True when told to stop."""
    if cmd[0] == "stats":
        conn.send(tally.stats(cmd[1], cmd[2], cmd[3], closed))
    return bool(cmd[0] == "stop")


class EpollWorker:
    """The ``epoll`` flavour: blocking handshakes, then one loop over every socket and the pipe."""

    def __init__(self, conn: Connection, host: str, port: int, jobs: Sequence[Job]) -> None:
        self.conn, self.host, self.port, self.jobs = conn, host, port, jobs
        self.tally = Tally()
        self.socks: list[socket.socket] = []
        self.by_fd: dict[int, socket.socket] = {}
        self.bufs: dict[int, bytes] = {}
        self.pending: dict[int, int] = {}  # replies each socket still waits for (hello + subscribed)
        self.gone: set[int] = set()  # sockets closed (by the node, or by us at the end)

    def _open(self, job: Job) -> None:
        s = socket.create_connection((self.host, self.port), timeout=15, source_address=(job.source, 0) if job.source else None)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(wire.handshake_request(self.host, self.port, job.path))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if refused := wire.handshake_status(head):
            raise ConnectionError(f"handshake refused: {refused}")
        if job.channels:
            s.sendall(wire.subscribe_frame(job.channels))
        s.setblocking(False)
        fd = s.fileno()
        self.socks.append(s)
        self.by_fd[fd] = s
        self.pending[fd] = 1 + len(job.channels)
        self.bufs[fd] = b""
        if rest:
            self._frames(fd, rest)

    def _readable(self, fd: int) -> None:
        try:
            data = self.by_fd[fd].recv(wire.RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(fd)
            return
        self._frames(fd, self.bufs[fd] + data if self.bufs[fd] else data)

    def _frames(self, fd: int, data: bytes) -> None:
        now, n, pos, text = time.monotonic(), len(data), 0, self.tally.text
        while (frame := wire.frame_at(data, pos, n)) is not None:
            b0, start, pos = frame
            opcode = b0 & 0x0F
            if opcode == wire.OP_TEXT:
                if text(data, start, pos, now):
                    self.pending[fd] -= 1
            elif opcode == wire.OP_PING:
                with contextlib.suppress(OSError):
                    self.by_fd[fd].send(wire.encode_frame(wire.OP_PONG, data[start:pos]))
            elif opcode == wire.OP_CLOSE:
                self._close(fd)
                return
        self.bufs[fd] = data[pos:] if pos < n else b""

    def _close(self, fd: int) -> None:
        if fd not in self.gone:
            self.gone.add(fd)
            with contextlib.suppress(OSError):
                self.by_fd[fd].send(wire.encode_frame(wire.OP_CLOSE, b"\x03\xe8"))
            self.by_fd[fd].close()

    def run(self, nap_s: float, heartbeat_s: float) -> None:
        ctl = self.conn.fileno()
        try:
            for job in self.jobs:
                self._open(job)
            ep = select.epoll(len(self.socks) + 8)
            for fd in self.by_fd:
                ep.register(fd, select.EPOLLIN)
            deadline = time.monotonic() + 60
            while any(v > 0 for v in self.pending.values()):
                if self.gone:
                    raise ConnectionError(f"{len(self.gone)} sockets closed by the node while subscribing")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{sum(v <= 0 for v in self.pending.values())}/{len(self.socks)} sockets ready after 60 s")
                for fd, _ in ep.poll(1.0):
                    self._readable(fd)
            if self.tally.errors:
                raise RuntimeError(f"{self.tally.errors} error replies while subscribing")
        except Exception as exc:  # noqa: BLE001 - reported to the benchmark, which stops
            self.conn.send(("failed", repr(exc)))
            return
        ep.register(ctl, select.EPOLLIN)
        self.conn.send(("ready", len(self.socks)))
        beats, readable, poll = Beats(len(self.socks), heartbeat_s), self._readable, ep.poll
        while True:
            events = poll(beats.wait_s(time.monotonic()))
            for fd, _ in events:
                if fd != ctl:
                    readable(fd)
                elif _answer(self.conn, self.conn.recv(), self.tally, len(self.gone)):
                    for sock_fd in self.by_fd:
                        self._close(sock_fd)
                    self.conn.send("stopped")
                    return
            for k in beats.due(time.monotonic()):
                with contextlib.suppress(OSError):
                    self.socks[k].send(wire.HEARTBEAT)
            if nap_s and len(events) < 64:
                time.sleep(nap_s)  # let frames pile up: the next wake-up then serves many sockets


async def asyncio_worker(conn: Connection, host: str, port: int, jobs: Sequence[Job], heartbeat_s: float) -> None:
    """The ``asyncio`` flavour: a :class:`~bench.harness.wire.Peer` per job, the pipe as a reader."""
    tally = Tally()
    sem = asyncio.Semaphore(64)

    def on_frame(payload: bytes, now: float) -> None:
        tally.text(payload, 0, len(payload), now)

    async def one(job: Job) -> wire.Peer:
        async with sem:
            return await wire.connect(host, port, job.path, on_frame, channels=job.channels, source=job.source, timeout_s=60)

    try:
        peers = await asyncio.gather(*(one(j) for j in jobs))
    except Exception as exc:  # noqa: BLE001 - reported to the benchmark, which stops
        conn.send(("failed", repr(exc)))
        return
    conn.send(("ready", len(peers)))
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: inbox.put_nowait(conn.recv()))

    async def beat() -> None:
        beats = Beats(len(peers), heartbeat_s)
        while beats.gap:
            await asyncio.sleep(beats.wait_s(time.monotonic()))
            for k in beats.due(time.monotonic()):
                peers[k].send(wire.HEARTBEAT)

    beater = asyncio.create_task(beat())
    while not _answer(conn, await inbox.get(), tally, sum(p.closed.done() for p in peers)):
        pass
    beater.cancel()
    loop.remove_reader(conn.fileno())
    for p in peers:
        p.close()
    await asyncio.wait([p.closed for p in peers], timeout=5)
    conn.send("stopped")


def worker_main(conn: Connection, host: str, port: int, jobs: Sequence[Job], *, kind: str, nap_s: float, heartbeat_s: float) -> None:
    """A worker process's entry point (spawned by :class:`bench.harness.crowd.Crowd`)."""
    if kind == "asyncio":
        asyncio.run(asyncio_worker(conn, host, port, jobs, heartbeat_s))
    else:
        EpollWorker(conn, host, port, jobs).run(nap_s, heartbeat_s)
