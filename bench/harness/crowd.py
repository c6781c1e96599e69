"""Crowds of subscribed sockets held by worker processes: the fan-out receivers, the memory
benchmark's idle connections.

Sockets are spread over worker processes (this machine allows 20,000 open files per process, so
at most 18,000 sockets each) and over loopback source addresses 127.0.0.1… (about 28k ephemeral
ports per address, so at most 25,000 sockets each). The clients themselves are in
``bench.harness.workers``. Workers measure delivery latency from the scheduled send time carried
in each message (``workers.stamp``) and ship only histograms and per-millisecond arrival counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, Self

from bench.harness.measure import Histogram
from bench.harness.workers import Job, worker_main

MAX_SOCKETS_PER_WORKER = 18_000
MAX_SOCKETS_PER_SOURCE = 25_000


def spread_sources(n: int, sources: int) -> list[str | None]:
    """Source address per socket, round robin over at least enough addresses for ``n`` sockets."""
    k = max(sources, math.ceil(n / MAX_SOCKETS_PER_SOURCE))
    return [f"127.0.0.{1 + i % k}" if k > 1 else None for i in range(n)]


class Crowd:
    """``jobs`` held open by worker processes (``async with``: spawned, connected, subscribed;
    stopped and reaped on exit, bounded)."""

    def __init__(
        self,
        host: str,
        port: int,
        jobs: Sequence[Job],
        *,
        workers: int = 2,
        kind: str = "epoll",
        nap_s: float = 0.001,
        heartbeat_s: float = 0.0,
    ) -> None:
        n = max(workers, math.ceil(len(jobs) / MAX_SOCKETS_PER_WORKER))
        ctx = mp.get_context("spawn")  # a clean interpreter: no inherited loop, sockets or threads
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for k in range(n):
            parent, child = ctx.Pipe()
            self.procs.append(
                ctx.Process(
                    target=worker_main,
                    args=(child, host, port, list(jobs[k::n])),
                    kwargs={"kind": kind, "nap_s": nap_s, "heartbeat_s": heartbeat_s},
                    daemon=True,
                )
            )
            self.conns.append(parent)
        self.size = len(jobs)
        self.connect_s = 0.0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid]

    async def _ask(self, cmd: tuple[Any, ...] | None, timeout_s: float) -> list[Any]:
        """Send ``cmd`` (None: just listen) to every worker and collect one reply each, bounded."""
        loop = asyncio.get_running_loop()
        for c in self.conns if cmd is not None else ():
            with contextlib.suppress(OSError):  # a worker that failed has closed its end
                c.send(cmd)

        def reply(c: Connection) -> Any:
            with contextlib.suppress(OSError, EOFError):
                if c.poll(timeout_s):
                    return c.recv()
            return ("failed", "no reply in time")

        return list(await asyncio.gather(*(loop.run_in_executor(None, reply, c) for c in self.conns)))

    async def __aenter__(self) -> Self:
        t0 = time.monotonic()
        for p in self.procs:
            p.start()
        ready = await self._ask(None, 60 + 0.01 * self.size)
        self.connect_s = time.monotonic() - t0
        failed = [r for r in ready if r[0] != "ready"]
        if failed:
            await self.__aexit__()
            raise RuntimeError(f"client workers failed: {failed}")
        return self

    async def stats(self, step: int, lo: float, hi: float) -> dict[str, Any]:
        """What arrived for ``step`` (latency) and within ``[lo, hi)`` (count), over all workers."""
        hist, out = Histogram(), {"received": 0, "resyncs": 0, "errors": 0, "closed": 0, "heartbeat_acks": 0}
        for s in await self._ask(("stats", step, lo, hi), 30):
            for key in out:
                out[key] += s[key]
            if s["hist"]:
                hist.merge(s["hist"])
        return {**out, "hist": hist}

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self._ask(("stop",), 10)
        for p in self.procs:
            if p.pid:
                p.join(5)
            if p.is_alive():
                p.kill()
