"""Server memory per idle connection: RSS with 5,000 authenticated, subscribed sockets.

    .venv/bin/python -m bench.memory [--connections 5000] [--workers 4] [--sources 2] [--no-deflate-compare]

Starts ``chat serve`` (production settings: per-message-deflate off), opens and closes a few
sockets to warm it up, reads ``VmRSS`` from ``/proc/<pid>/status``, then opens
``--connections`` sockets from ``--workers`` client processes (each under the 20,000
open-files limit) spread over ``--sources`` loopback source addresses. Every socket
authenticates with its own user's JWT and subscribes to two channels: a room all users are in
and a 100-member group. Once every socket has its ``hello`` and both ``subscribed`` replies, and
the RSS has settled, RSS is read again: (after - before) / connections.

Unless ``--no-deflate-compare``, the same measurement is then repeated on two more nodes run by
``bench.serve_variant`` with ``ws_per_message_deflate`` off and on (clients offer the
extension in both), giving the deflate cost as a ratio measured in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import orjson

from bench.common import GENEROUS_LIMITS, BenchServer, Target, rss_kib, verdict, write_result
from bench.wsclient import RawWs, connect

TARGET_KIB = 50.0
GROUP_SIZE = 100


class IdleClient(RawWs):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hello = False
        self.subs = 0
        self.want = 0
        self.done = asyncio.get_running_loop().create_future()

    def on_text(self, payload: bytes, now: float) -> None:
        if payload.startswith(b'{"op":"hello"'):
            self.hello = True
        elif payload.startswith(b'{"op":"subscribed"'):
            self.subs += 1
        elif payload.startswith(b'{"op":"error"') and not self.done.done():
            self.done.set_exception(RuntimeError(payload.decode()))
        if self.hello and self.subs >= self.want and not self.done.done():
            self.done.set_result(None)


def worker_main(conn: Connection, host: str, port: int, path: str, jobs: list[tuple[str, list[str]]], source: str | None, deflate: bool) -> None:
    asyncio.run(_worker(conn, host, port, path, jobs, source, deflate))


async def _worker(conn: Connection, host: str, port: int, path: str, jobs: list[tuple[str, list[str]]], source: str | None, deflate: bool) -> None:
    sem = asyncio.Semaphore(64)
    clients: list[IdleClient] = []

    async def open_one(token: str, channels: list[str]) -> None:
        async with sem:
            c = await connect(lambda: IdleClient(host, port, f"{path}?token={token}", deflate=deflate), host, port, source=source)
            c.want = len(channels)
            c.send_text(orjson.dumps({"op": "subscribe", "id": 1, "channels": channels}))
            clients.append(c)
            await asyncio.wait_for(asyncio.shield(c.done), 60)

    t0 = time.monotonic()
    try:
        await asyncio.gather(*(open_one(t, ch) for t, ch in jobs))
    except Exception as exc:  # noqa: BLE001
        conn.send(("failed", repr(exc), len(clients)))
    else:
        conn.send(("ready", len(clients), round(time.monotonic() - t0, 2), sum(c._inflate is not None for c in clients)))
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
    for c in clients:
        c.close()
    await asyncio.sleep(0.3)
    conn.send(("stopped", sum(c.close_code is None and not c.closed.done() for c in clients)))


def settle_rss(pid: int, *, timeout_s: float = 10.0, interval: float = 0.5) -> int:
    """RSS once two consecutive readings differ by < 0.5 %."""
    last = rss_kib(pid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = rss_kib(pid)
        if abs(now - last) <= 0.005 * last:
            return now
        last = now
    return last


def measure(label: str, server: BenchServer, args: argparse.Namespace, *, deflate_offer: bool, before_hook: Any = None, after_hook: Any = None) -> dict[str, Any]:
    target: Target = server.target
    n = args.connections
    users = [f"mem-{i}" for i in range(n)]
    room = target.create_channel(users[0], "room", "memory bench room", users[1:])
    groups = []
    for g in range(0, n, GROUP_SIZE):
        members = users[g : g + GROUP_SIZE]
        groups.append(target.create_channel(members[0], "group", f"memory group {g // GROUP_SIZE}", members[1:]) if len(members) > 1 else room)
    # Warm-up: a few sockets open, subscribe, close (imports, first allocations, caches).
    asyncio.run(_warmup(target, users[:20], room, deflate_offer))
    time.sleep(1.0)
    before = settle_rss(server.pid)
    if before_hook:
        before_hook()

    ctx = mp.get_context("spawn")
    sources = [f"127.0.0.{1 + k}" for k in range(args.sources)] if args.sources > 1 else [None]
    per = (n + args.workers - 1) // args.workers
    procs, conns = [], []
    t0 = time.monotonic()
    for k in range(args.workers):
        jobs = [(target.token(users[i]), [room, groups[i // GROUP_SIZE]]) for i in range(k * per, min(n, (k + 1) * per))]
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker_main, args=(child, target.host, target.port, target.ws_path, jobs, sources[k % len(sources)], deflate_offer), daemon=True)
        p.start()
        procs.append(p)
        conns.append(parent)
    try:
        replies = [c.recv() for c in conns]
        connect_s = time.monotonic() - t0
        failed = [r for r in replies if r[0] != "ready"]
        if failed:
            raise RuntimeError(f"{label}: workers failed: {failed}\n{server.log_tail()}")
        opened = sum(r[1] for r in replies)
        negotiated = sum(r[3] for r in replies)
        after = settle_rss(server.pid)
        per_conn = (after - before) / opened
        if after_hook:
            after_hook()
            time.sleep(1.5)
    finally:
        for c in conns:
            try:
                c.send("stop")
            except OSError:
                pass
        for c in conns:
            try:
                if c.poll(10):
                    c.recv()
            except (EOFError, OSError):
                pass
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    res = {
        "label": label,
        "connections": opened,
        "deflate_negotiated_sockets": negotiated,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round(per_conn, 2),
        "connect_all_s": round(connect_s, 2),
        "connections_per_s": round(opened / connect_s, 1),
    }
    print(
        f"  {label}: RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB with {opened} sockets "
        f"({negotiated} with deflate) = {per_conn:.1f} KiB/connection; connected in {connect_s:.1f}s",
        flush=True,
    )
    return res


async def _warmup(target: Target, users: list[str], room: str, deflate: bool) -> None:
    clients = []
    for u in users:
        c = await connect(lambda u=u: IdleClient(target.host, target.port, f"{target.ws_path}?token={target.token(u)}", deflate=deflate), target.host, target.port)
        c.want = 1
        c.send_text(orjson.dumps({"op": "subscribe", "id": 1, "channels": [room]}))
        await asyncio.wait_for(c.done, 10)
        clients.append(c)
    for c in clients:
        c.close()
    await asyncio.sleep(0.3)


def traced(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Where the per-connection Python memory goes: tracemalloc snapshots before/after, diffed by file and line."""
    import os
    import signal
    import tracemalloc

    argv_ = [sys.executable, "-m", "bench.serve_variant", "--patch", "tracemalloc"]
    server = BenchServer(env=env, argv=argv_, name="memory-traced")
    snap = server.data_dir / "tm.snap"
    server.env["BENCH_TRACEMALLOC_OUT"] = str(snap)
    server.start()
    try:
        hook = {"before": None}

        def before_cb() -> None:
            os.kill(server.pid, signal.SIGUSR2)
            time.sleep(1.0)
            hook["before"] = tracemalloc.Snapshot.load(str(snap))

        res = measure("traced (tracemalloc on; RSS inflated by tracing)", server, args, deflate_offer=False, before_hook=before_cb, after_hook=lambda: os.kill(server.pid, signal.SIGUSR2))
        time.sleep(2.0)
        after = tracemalloc.Snapshot.load(f"{snap}.2")
        stats = after.compare_to(hook["before"], "lineno")
        n = res["connections"]
        top = []
        total = sum(st.size_diff for st in stats)
        for st in stats[:25]:
            frame = st.traceback[0]
            name = frame.filename
            for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
                if marker in name:
                    name = name.split(marker, 1)[1]
                    break
            top.append({"where": f"{name}:{frame.lineno}", "bytes_per_connection": round(st.size_diff / n), "blocks_per_connection": round(st.count_diff / n, 2)})
        by_file = []
        for st in after.compare_to(hook["before"], "filename")[:12]:
            name = st.traceback[0].filename
            for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
                if marker in name:
                    name = name.split(marker, 1)[1]
                    break
            by_file.append({"file": name, "bytes_per_connection": round(st.size_diff / n)})
        res["python_heap_bytes_per_connection"] = round(total / n)
        res["top_allocations"] = top
        res["top_files"] = by_file
        print(f"  tracemalloc: Python heap +{total / n / 1024:.1f} KiB per connection; top sites:")
        for t in top[:15]:
            print(f"    {t['bytes_per_connection']:6d} B  {t['blocks_per_connection']:5.2f} blocks  {t['where']}")
        print("  by file:")
        for t in by_file:
            print(f"    {t['bytes_per_connection']:6d} B  {t['file']}")
        return res
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4, help="client processes (each < 20,000 open files)")
    parser.add_argument("--sources", type=int, default=2, help="loopback source addresses 127.0.0.1..N")
    parser.add_argument("--no-deflate-compare", dest="deflate_compare", action="store_false")
    parser.add_argument(
        "--tracemalloc", action="store_true",
        help="also run a node under tracemalloc and rank where its per-connection Python memory is allocated (slower)",
    )
    args = parser.parse_args(argv)
    if args.connections / args.workers > 18_000:
        raise SystemExit("too many sockets per worker for the 20,000 open-files limit: raise --workers")

    runs = []
    env = dict(GENEROUS_LIMITS)
    with BenchServer(env=env, name="memory") as server:
        runs.append(measure("chat serve (production config, deflate off)", server, args, deflate_offer=True))
    if args.deflate_compare:
        for mode in ("off", "on"):
            argv_ = [sys.executable, "-m", "bench.serve_variant", "--deflate", mode]
            with BenchServer(env=env, argv=argv_, name=f"memory-deflate-{mode}") as server:
                runs.append(measure(f"serve_variant deflate {mode}", server, args, deflate_offer=True))
    if args.tracemalloc:
        runs.append(traced(args, env))
    main_run = runs[0]
    value = main_run["kib_per_connection"]
    result: dict[str, Any] = {
        "params": vars(args),
        "kib_per_connection": value,
        "target_kib_per_connection": TARGET_KIB,
        "verdict": verdict(value, TARGET_KIB, higher_is_better=False),
        "runs": runs,
    }
    if args.deflate_compare:
        off, on = runs[1]["kib_per_connection"], runs[2]["kib_per_connection"]
        result["deflate_on_minus_off_kib"] = round(on - off, 2)
        result["deflate_on_over_off_ratio"] = round(on / off, 2) if off > 0 else None
    path = write_result("memory", result)
    extra = ""
    if args.deflate_compare:
        extra = f"; per-message-deflate on: {runs[2]['kib_per_connection']:.1f} KiB vs off {runs[1]['kib_per_connection']:.1f} KiB (x{result['deflate_on_over_off_ratio']})"
    print(
        f"memory: {value:.1f} KiB RSS per idle subscribed connection with {main_run['connections']} connections{extra} "
        f"target <= {TARGET_KIB:.0f} KiB: {result['verdict']}  [bench/results/{path.name}]"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
