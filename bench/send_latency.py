"""send→ack latency at a fixed offered rate on one node (open loop, no coordinated omission).

    .venv/bin/python -m bench.send_latency [--rate 500] [--duration 20] [--senders 10] [--profile]
    .venv/bin/python -m bench.send_latency --url ws://127.0.0.1:8000/v1/ws --secret "$CHAT_JWT_SECRET"

Starts ``python -m chat serve`` with its own data dir on disk (SQLite, WAL, ``synchronous=FULL``:
every group commit is fsynced) unless ``--url`` names a running node. ``--senders`` and
``--subscribers`` sockets join one group channel and all subscribe to it (so every message is
also fanned out to 12 sockets by default). Message *i* is due at ``t0 + i/rate`` and goes out on
sender ``i % senders`` when the client loop reaches that time; latency runs from the *scheduled*
time to the ``ack`` (and, on the subscribers, to the ``message``), so a stalled node cannot hide
its stall by slowing the sender down. The first ``--warmup`` seconds are not recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from bench.harness.load import SendRun
from bench.harness.measure import CpuSplit, headline, parse_args, report, verdict
from bench.harness.node import Target, add_node_args, node_from_args
from bench.harness.profile import PySpy, print_profile
from bench.harness.wire import close_all, open_peer

TARGET_P99_MS = 10.0
QUICK = {"duration": 3.0, "warmup": 1.0, "rate": 200.0}


def add_latency_args(parser: argparse.ArgumentParser, *, rate: float) -> None:
    """The options of a send run (shared with ``bench.cluster_latency``)."""
    parser.add_argument("--rate", type=float, default=rate, help="offered messages per second, in total (default %(default)s)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="unrecorded seconds first")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--subscribers", type=int, default=2)
    parser.add_argument("--text-size", type=int, default=100, help="characters per message")


async def run(args: argparse.Namespace, target: Target, split: CpuSplit, profile_pid: int | None) -> dict[str, Any]:
    """One send run: the sockets join a group, messages go out on schedule; ``split`` is reset
    and read at the measured window's edges; ``profile_pid`` is sampled with py-spy meanwhile."""
    loop = asyncio.get_running_loop()
    senders = [f"lat-s{i}" for i in range(args.senders)]
    subs = [f"lat-r{i}" for i in range(args.subscribers)]
    channel = await loop.run_in_executor(None, target.create_channel, senders[0], "group", "latency bench", senders[1:] + subs)
    sends = SendRun(args.rate, args.warmup, args.duration, receivers=args.subscribers)
    send_peers = [await open_peer(target, u, sends.on_sender_frame, channels=[channel]) for u in senders]
    sub_peers = [await open_peer(target, u, sends.on_receiver_frame, channels=[channel]) for u in subs]
    profiler: list[PySpy] = []

    def window() -> None:
        split.reset()
        if profile_pid:
            profiler.append(PySpy(profile_pid, args.duration, args.name))

    await sends.send_all([(p, channel) for p in send_peers], "x" * args.text_size, window)
    cpu = split.read()
    await sends.finish(10)
    await close_all(send_peers + sub_peers)
    profile = await loop.run_in_executor(None, profiler[0].summary) if profiler else None
    return {"sends": sends, "cpu_cores": cpu, "profile": profile}


def fsync_probe(directory: str | None, n: int = 200) -> dict[str, float]:
    """What one durable commit costs on this disk: write 4 KiB + fdatasync, ``n`` times."""
    lat = []
    with tempfile.NamedTemporaryFile(dir=directory) as f:
        block = os.urandom(4096)
        for _ in range(n):
            t = time.perf_counter()
            os.write(f.fileno(), block)
            os.fdatasync(f.fileno())
            lat.append(time.perf_counter() - t)
    lat.sort()
    return {
        "fdatasync_p50_ms": round(lat[n // 2] * 1000, 3),
        "fdatasync_p99_ms": round(lat[int(n * 0.99) - 1] * 1000, 3),
        "fdatasync_max_ms": round(lat[-1] * 1000, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_latency_args(parser, rate=500.0)
    add_node_args(parser)
    args = parse_args(parser, argv, name="send_latency", quick=QUICK)

    disk = {} if args.url else fsync_probe(os.environ.get("BENCH_TMP") or None)
    with node_from_args(args, name="latency") as (target, node):
        split = CpuSplit({"node": [node.pid if node else None], "loadgen": [os.getpid()]}, main_thread_of=["node"])
        out = asyncio.run(run(args, target, split, node.pid if node and args.profile else None))
    sends: SendRun = out.pop("sends")
    s = sends.summary()
    ack, d = s["ack_latency"], s["delivery_latency"]
    result = {
        "params": {k: v for k, v in vars(args).items() if k != "secret"},
        "store": "external (--url)" if args.url else "SQLite WAL synchronous=FULL on local disk",
        "offered_msgs_per_s": args.rate,
        **s,
        "disk": disk,
        "target_p99_ms": TARGET_P99_MS,
        "verdict": verdict(ack["p99_ms"], TARGET_P99_MS, higher_is_better=False) if sends.complete else "MISS (lost acks or deliveries)",
        "headline": headline(
            ack_p50_ms=(ack["p50_ms"], "lower"),
            ack_p99_ms=(ack["p99_ms"], "lower"),
            delivery_p99_ms=(d["p99_ms"], "lower"),
            node_cpu_cores=(out["cpu_cores"].get("node"), "lower"),
        ),
        **out,
    }
    line = (
        f"{args.rate:.0f} msg/s offered for {args.duration:.0f}s over {args.senders} senders -> "
        f"ack p50 {ack['p50_ms']:.2f} ms, p99 {ack['p99_ms']:.2f} ms, max {ack['max_ms']:.2f} ms "
        f"(delivery p50 {d['p50_ms']:.2f} / p99 {d['p99_ms']:.2f} ms; {s['acked']}/{s['sent']} acked, "
        f"{s['missing_deliveries']} deliveries missing, {s['errors']} errors; node CPU {out['cpu_cores'].get('node')} cores, "
        f"load generator {out['cpu_cores']['loadgen']}; disk fdatasync p50 {disk.get('fdatasync_p50_ms')} ms)"
    )
    report(args.name, result, line=line, target=f"p99 <= {TARGET_P99_MS:.0f} ms", checkout=args.checkout)
    if result["profile"]:
        print_profile(result["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
