"""``GET /v1/connect`` on a real node: latency at a fixed rate, and assignments per second.

    .venv/bin/python -m bench.connect_latency [--nodes 3] [--rate 500] [--duration 10]

Starts ``--nodes`` chat nodes on the shared ZooKeeper (a fresh chroot) — or, with ``--nodes 1``
and no ZooKeeper, one embedded node — and asks the first one to assign distinct users:

1. open loop at ``--rate`` requests/s (latency from the scheduled time, keep-alive HTTP/1.1
   connections): p50/p99 — the target is p99 ≤ 5 ms;
2. closed loop, ``--concurrency`` callers back to back: assignments per second the node answers.

Each request is a full request: token verified, rate limit, assignment from the watched view.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

from bench.harness.load import open_loop
from bench.harness.measure import CpuSplit, Histogram, headline, parse_args, report, verdict
from bench.harness.node import GENEROUS_LIMITS, Node, add_node_args, pin_client, server_env

TARGET_P99_MS = 5.0


@contextlib.contextmanager
def nodes(args: argparse.Namespace) -> Iterator[list[Node]]:
    env = {**GENEROUS_LIMITS, **server_env(args)}
    if args.nodes > 1:
        env["CHAT_ZOOKEEPER_HOSTS"] = f"{args.zookeeper}/chat-bench-{secrets.token_hex(4)}"
    started: list[Node] = []
    try:
        for i in range(args.nodes):
            started.append(Node(env=env, name=f"connect{i}", checkout=args.checkout, cpus=args.server_cpus if i == 0 else None).start(60))
        yield started
    finally:
        for node in started:
            node.stop()


class Conn:
    """One keep-alive HTTP/1.1 connection (TCP_NODELAY): a request, then its whole response.

    Hand-written on purpose: httpx's async client costs milliseconds per request here, which
    would be the client's latency reported as the node's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def get(self, path: str, token: str) -> int:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def measure(args: argparse.Namespace, node: Node) -> dict[str, Any]:
    target = node.target
    tokens = [target.token(f"user-{i}") for i in range(2000)]
    pool = [await Conn.open(node.port) for _ in range(args.concurrency)]
    free: asyncio.Queue[Conn] = asyncio.Queue()
    for conn in pool:
        free.put_nowait(conn)
    hist = Histogram()
    errors = 0
    inflight: set[asyncio.Task[None]] = set()

    async def ask(i: int, due: float) -> None:
        nonlocal errors
        conn = await free.get()  # every connection busy: this request queues, and its latency shows it
        try:
            if await conn.get("/v1/connect", tokens[i % len(tokens)]) != 200:
                errors += 1
        finally:
            free.put_nowait(conn)
        hist.record(time.monotonic() - due)

    def send(i: int, due: float, now: float) -> None:
        task = asyncio.ensure_future(ask(i, due))
        inflight.add(task)
        task.add_done_callback(inflight.discard)

    cpu = CpuSplit({"node": [node.pid]}, main_thread_of=("node",))
    await open_loop(args.rate, int(args.rate * args.duration), send)
    await asyncio.gather(*inflight)
    open_result = {"latency": hist.summary(), "errors": errors, "cpu_cores": cpu.read()}

    async def op(i: int) -> None:
        conn = pool[i % len(pool)]
        if await conn.get("/v1/connect", tokens[i % len(tokens)]) != 200:
            raise RuntimeError("not 200")

    capacity = await closed_loop_per_conn(op, pool, args.duration)
    for conn in pool:
        conn.close()
    return {"open_loop": open_result, "assignments_per_s": round(capacity / args.duration, 1)}


async def closed_loop_per_conn(op: Any, pool: list[Conn], duration_s: float) -> int:
    """Each connection asks back to back for ``duration_s``; returns the answers counted."""
    deadline = time.monotonic() + duration_s
    done = 0

    async def worker(k: int) -> None:
        nonlocal done
        i = k
        while time.monotonic() < deadline:
            await op(i)
            done += 1
            i += len(pool)

    await asyncio.gather(*(worker(k) for k in range(len(pool))))
    return done


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3, help="nodes in the cluster (1: embedded, no ZooKeeper)")
    parser.add_argument("--zookeeper", default="127.0.0.1:2181", help="ZooKeeper for --nodes > 1")
    parser.add_argument("--rate", type=float, default=500.0, help="requests/s of the open loop")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each window")
    parser.add_argument("--concurrency", type=int, default=16, help="callers of the closed loop")
    add_node_args(parser, url=False)
    args = parse_args(parser, argv, name="connect_latency", quick={"rate": 100.0, "duration": 2.0, "nodes": 1})
    pin_client(args)
    with nodes(args) as started:
        result = asyncio.run(measure(args, started[0]))
    p99 = result["open_loop"]["latency"].get("p99_ms")
    result["verdict"] = verdict(p99, TARGET_P99_MS, higher_is_better=False)
    result["headline"] = headline(p99_ms=(p99, "lower"), assignments_per_s=(result["assignments_per_s"], "higher"))
    line = (
        f"p50 {result['open_loop']['latency'].get('p50_ms')} / p99 {p99} ms at {args.rate:g}/s over {args.nodes} node(s), "
        f"{result['assignments_per_s']:,.0f} assignments/s ({args.concurrency} callers)"
    )
    report(args.name, result, line=line, target=f"p99 <= {TARGET_P99_MS} ms", checkout=args.checkout)


if __name__ == "__main__":
    main()
