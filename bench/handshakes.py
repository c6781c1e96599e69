"""WebSocket handshakes per second: connect, token verified, ``hello`` received.

    .venv/bin/python -m bench.handshakes [--connections 3000] [--workers 2] [--concurrency 64]

Starts ``python -m chat serve`` and opens ``--connections`` sockets from ``--workers`` client
processes (the lean client of ``bench.harness.wire``), each keeping ``--concurrency`` handshakes
in flight; every socket is a different user with its own JWT, and counts once its ``hello``
arrived. The sockets stay open until all are in (a server must hold what it accepted). Reports
handshakes per second, the node's CPU per handshake, and the load generator's CPU (the client
must stay cheaper than the node, or the figure is the client's limit).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from collections.abc import Sequence
from typing import Any

from bench.harness.measure import CpuSplit, headline, parse_args, report, us_per, verdict
from bench.harness.node import Target, add_node_args, node_from_args, pin_client
from bench.harness.profile import PySpy, print_profile
from bench.harness.wire import close_all, connect

TARGET_PER_S = 3000.0


def _worker(target: Target, users: list[str], concurrency: int, start_at: float, out: Any) -> None:
    async def run() -> None:
        await asyncio.sleep(max(0.0, start_at - time.time()))  # every worker starts together
        peers = []
        failures = 0
        todo = iter(users)

        async def opener() -> None:
            nonlocal failures
            for user in todo:
                try:
                    peers.append(await connect(target.host, target.port, target.ws_path_for(user), timeout_s=30))
                except (OSError, ConnectionError, RuntimeError, TimeoutError):
                    failures += 1

        t0 = time.monotonic()
        await asyncio.gather(*(opener() for _ in range(concurrency)))
        elapsed = time.monotonic() - t0
        out.put({"opened": len(peers), "failures": failures, "elapsed_s": elapsed, "cpu_s": time.process_time()})
        await asyncio.sleep(1.0)  # hold them a moment: the node has every one of them at once
        await close_all(peers)

    asyncio.run(run())


async def measure(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    users = [f"hs-{i}" for i in range(args.connections)]
    shares = [users[w :: args.workers] for w in range(args.workers)]
    ctx = multiprocessing.get_context("spawn")
    results: Any = ctx.Queue()
    start_at = time.time() + 3.0  # the workers' imports are not part of the window
    procs = [ctx.Process(target=_worker, args=(target, share, args.concurrency, start_at, results)) for share in shares]
    for p in procs:
        p.start()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    split = CpuSplit({"node": [target.pid], "loadgen": [p.pid for p in procs if p.pid]}, main_thread_of=["node"])
    profiler = PySpy(target.pid, 5, f"{args.name}_node") if args.profile and target.pid else None
    loop = asyncio.get_running_loop()
    got = [await loop.run_in_executor(None, results.get, True, 120) for _ in procs]
    cpu = split.read()
    profile = await loop.run_in_executor(None, profiler.summary) if profiler else None
    for p in procs:
        p.join(30)
    opened = sum(g["opened"] for g in got)
    elapsed = max(g["elapsed_s"] for g in got)
    per_s = opened / elapsed if elapsed else 0.0
    return {
        "connections": args.connections,
        "opened": opened,
        "failures": sum(g["failures"] for g in got),
        "elapsed_s": round(elapsed, 2),
        "handshakes_per_s": round(per_s, 1),
        "cpu_cores": cpu,
        "node_cpu_us_per_handshake": us_per(cpu.get("node"), per_s),
        "profile": profile,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--concurrency", type=int, default=64, help="handshakes in flight per worker")
    add_node_args(parser)
    args = parse_args(parser, argv, name="handshakes", quick={"connections": 300, "concurrency": 16})
    pin_client(args)
    with node_from_args(args, name="handshakes") as (target, _node):
        result = asyncio.run(measure(args, target))
    per_s = result["handshakes_per_s"]
    result["verdict"] = verdict(per_s, TARGET_PER_S, higher_is_better=True)
    result["headline"] = headline(handshakes_per_s=(per_s, "higher"))
    cpu = result["cpu_cores"]
    line = (
        f"{per_s:,.0f} handshakes/s ({result['opened']} of {args.connections}, {result['failures']} failed); "
        f"node {cpu.get('node')} cores ({result['node_cpu_us_per_handshake']} us each), load generator {cpu.get('loadgen')} cores"
    )
    report(args.name, result, line=line, target=f">= {TARGET_PER_S:,.0f}/s", checkout=args.checkout)
    if result["profile"]:
        print("  profile of the node during the handshakes:")
        print_profile(result["profile"])
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
