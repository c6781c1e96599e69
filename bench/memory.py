"""Node memory per idle connection: RSS with 5,000 authenticated, subscribed sockets; and the
node's CPU while they idle.

    .venv/bin/python -m bench.memory [--connections 5000] [--workers 4] [--sources 2] [--heartbeat-s 2.5]

Starts ``python -m chat serve`` (production settings: per-message-deflate off), opens and closes
a few sockets to warm it up and reads ``VmRSS`` from ``/proc/<pid>/status``. Then
``--connections`` sockets are opened from ``--workers`` client processes (each under the 20,000
open-files limit), spread over ``--sources`` loopback source addresses. Every socket
authenticates with its own user's JWT and subscribes to two channels: a room all users are in
and a 100-member group. Once every socket has its ``hello`` and both ``subscribed`` replies and
the RSS has settled (two readings within 0.5 %), RSS is read again: (after - before) /
connections. Kernel socket buffers are not in RSS. Last, for ``--idle-s`` seconds the node's
CPU is measured while the sockets idle (``--heartbeat-s``: each sends ``heartbeat`` at that
interval, as clients do).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

from bench.harness.crowd import Crowd, spread_sources
from bench.harness.measure import CpuSplit, headline, parse_args, report, rss_kib, verdict
from bench.harness.node import Node, Target, add_node_args, node_from_args
from bench.harness.profile import PySpy, print_profile
from bench.harness.wire import close_all, open_peer
from bench.harness.workers import Job

TARGET_KIB = 50.0
GROUP_SIZE = 100
QUICK = {"connections": 500, "workers": 2, "idle_s": 2.0}


async def settled_rss(pid: int, *, timeout_s: float = 10.0, interval_s: float = 0.5) -> int:
    """RSS once two consecutive readings differ by < 0.5 % (or the last one after ``timeout_s``)."""
    last = rss_kib(pid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(interval_s)
        now = rss_kib(pid)
        if abs(now - last) <= 0.005 * last:
            return now
        last = now
    return last


async def measure(args: argparse.Namespace, target: Target, node: Node) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    n = args.connections
    users = [f"mem-{i}" for i in range(n)]
    room = await loop.run_in_executor(None, target.create_channel, users[0], "room", "memory bench room", users[1:])
    groups = []
    for g in range(0, n, GROUP_SIZE):
        members = users[g : g + GROUP_SIZE]
        groups.append(
            await loop.run_in_executor(None, target.create_channel, members[0], "group", f"memory group {g // GROUP_SIZE}", members[1:])
            if len(members) > 1
            else room
        )
    # Warm-up: imports, first allocations and caches of the node are not per-connection costs.
    await close_all([await open_peer(target, u, channels=[room]) for u in users[:20]])
    before = await settled_rss(node.pid)
    jobs = [
        Job(target.ws_path_for(u), (room, groups[i // GROUP_SIZE]), src)
        for i, (u, src) in enumerate(zip(users, spread_sources(n, args.sources), strict=True))
    ]
    async with Crowd(target.host, target.port, jobs, workers=args.workers, kind=args.client, heartbeat_s=args.heartbeat_s) as crowd:
        after = await settled_rss(node.pid)
        # 5,000 users just came online: their presence reaches every member of their small
        # channels (hundreds of thousands of frames). Idle means after that has settled.
        settle_s = await settled_cpu(node.pid)
        split = CpuSplit({"node": [node.pid], "loadgen": [os.getpid(), *crowd.pids]}, main_thread_of=["node"])
        profiler = PySpy(node.pid, args.idle_s, f"{args.name}_idle") if args.profile else None
        await asyncio.sleep(args.idle_s)  # the idle window measured
        idle = split.read()
        profile = await asyncio.get_running_loop().run_in_executor(None, profiler.summary) if profiler else None
        idle_stats = await crowd.stats(-1, 0, 0)  # the counters only: no step, no window
    return {
        "connections": n,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round((after - before) / n, 2),
        "connect_all_s": round(crowd.connect_s, 2),
        "connections_per_s": round(n / crowd.connect_s, 1),
        "idle_cpu_cores": idle,
        "heartbeat_acks": idle_stats["heartbeat_acks"],
        "closed_by_node": idle_stats["closed"],
        "presence_settle_s": settle_s,
        "profile": profile,
    }


async def settled_cpu(pid: int, *, below_cores: float = 0.25, sample_s: float = 2.0, timeout_s: float = 90.0) -> float:
    """Wait until the node's CPU over a sample stays below ``below_cores`` (or the timeout);
    returns how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        split = CpuSplit({"node": [pid]})
        await asyncio.sleep(sample_s)  # a CPU sample: there is no event to wait for
        if split.read()["node"] < below_cores:
            break
    return round(time.monotonic() - started, 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4, help="client processes (more are used past 18,000 sockets each)")
    parser.add_argument("--sources", type=int, default=2, help="loopback source addresses 127.0.0.1..N")
    parser.add_argument(
        "--client", choices=["epoll", "asyncio"], default="asyncio", help="client flavour (asyncio: 64 handshakes in flight per worker)"
    )
    parser.add_argument("--heartbeat-s", type=float, default=0.0, help="each socket sends `heartbeat` at this interval (0: none)")
    parser.add_argument("--idle-s", type=float, default=5.0, help="seconds of idle CPU measured after the RSS reading")
    add_node_args(parser, url=False)
    args = parse_args(parser, argv, name="memory", quick=QUICK)

    with node_from_args(args, name="memory") as (target, node):
        assert node is not None  # memory needs the node's own process (RSS)
        out = asyncio.run(measure(args, target, node))
    value = out["kib_per_connection"]
    idle_cpu = out["idle_cpu_cores"]["node"]
    result = {
        "params": vars(args),
        **out,
        "target_kib_per_connection": TARGET_KIB,
        "verdict": verdict(value, TARGET_KIB, higher_is_better=False),
        "headline": headline(
            kib_per_connection=(value, "lower"),
            idle_node_cpu_cores=(idle_cpu, "lower"),
            connections_per_s=(out["connections_per_s"], "higher"),
        ),
    }
    line = (
        f"{value:.1f} KiB RSS per idle subscribed connection with {out['connections']} connections "
        f"(RSS {out['rss_before_kib'] / 1024:.1f} -> {out['rss_after_kib'] / 1024:.1f} MiB; "
        f"connected at {out['connections_per_s']:.0f}/s); idle node CPU {idle_cpu:.3f} cores "
        f"(heartbeats every {args.heartbeat_s or '-'} s, {out['heartbeat_acks']} acks)"
    )
    report(args.name, result, line=line, target=f"<= {TARGET_KIB:.0f} KiB", checkout=args.checkout)
    if result.get("profile"):
        print("  profile of the node while the sockets idle:")
        print_profile(result["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
