"""Cross-node delivery: send on node 1, receive on node 2 (shared Cassandra + Redis), open loop.

    .venv/bin/python -m bench.cross_node [--rate 2000] [--channels 20] [--duration 20] [--profile]

Starts two ``python -m chat serve`` nodes (``CHAT_WORKER_ID`` 1 and 2) on the shared Cassandra (a
fresh keyspace, dropped at the end) and Redis. ``--channels`` group channels each get
``--senders-per-channel`` sending sockets on node 1 (not subscribed: node 1 only stores and
publishes) and ``--receivers-per-channel`` subscribed sockets on node 2. Message *i* is due at
``t0 + i/rate`` on sender ``i % senders`` (consecutive messages go to different channels); the
delivery latency runs from the *scheduled* time to the frame's arrival on node 2 (store write on
node 1 → Redis ``PUBLISH`` → node 2's relay reader → fan-out), so a stall anywhere shows in full.
The senders' ack latency is reported too, every message must arrive exactly once per receiver,
and the worst delivery per 100 ms is kept to line stalls up with Cassandra's GC pauses.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from typing import Any

from bench.harness import cluster
from bench.harness.load import SendRun
from bench.harness.measure import CpuSplit, headline, parse_args, report, us_per, verdict
from bench.harness.node import Node, add_node_args, pin_client
from bench.harness.profile import PySpy, print_profile
from bench.harness.wire import Peer, close_all, open_peer

TARGET_P99_MS = 25.0


async def measure(args: argparse.Namespace, n1: Node, n2: Node, split: CpuSplit) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    t1, t2 = n1.target, n2.target
    sends = SendRun(args.rate, args.warmup, args.duration, receivers=args.receivers_per_channel, tag="x")
    by_channel: list[list[tuple[Peer, str]]] = []
    receivers: list[Peer] = []
    for c in range(args.channels):
        snd = [f"xn-c{c}-s{k}" for k in range(args.senders_per_channel)]
        rcv = [f"xn-c{c}-r{k}" for k in range(args.receivers_per_channel)]
        ch = await loop.run_in_executor(None, t1.create_channel, snd[0], "group", f"xn {c}", snd[1:] + rcv)
        by_channel.append([(await open_peer(t1, u, sends.on_sender_frame), ch) for u in snd])
        receivers += [await open_peer(t2, u, sends.on_receiver_frame, channels=[ch]) for u in rcv]
    senders = [chan[k] for k in range(args.senders_per_channel) for chan in by_channel]
    busy_before = await loop.run_in_executor(None, cluster.settle)
    profiler: list[PySpy] = []

    def window() -> None:
        split.reset()
        if args.profile:
            node = n1 if args.profile_node == 1 else n2
            profiler.append(PySpy(node.pid, min(args.duration, 15), f"{args.name}_node{args.profile_node}"))

    await sends.send_all(senders, "x" * args.text_size, window)
    cpu = split.read()
    await sends.finish(15)
    await close_all([p for p, _ in senders] + receivers)
    profile = await loop.run_in_executor(None, profiler[0].summary) if profiler else None
    return {"sends": sends, "cpu_cores": cpu, "machine_busy_before_start": busy_before, "profile": profile}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000.0, help="offered messages per second (total, over all channels)")
    parser.add_argument("--channels", type=int, default=20)
    parser.add_argument("--senders-per-channel", type=int, default=2)
    parser.add_argument("--receivers-per-channel", type=int, default=1)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="unrecorded seconds first")
    parser.add_argument("--text-size", type=int, default=100)
    parser.add_argument("--profile-node", type=int, choices=[1, 2], default=1, help="which node --profile samples (1: the sending node)")
    cluster.add_cluster_args(parser)
    add_node_args(parser, url=False)
    args = parse_args(parser, argv, name="cross_node", quick={"rate": 200.0, "channels": 4, "duration": 3.0, "warmup": 1.0})
    pin_client(args)

    services = cluster.Services(args)
    with cluster.bench_keyspace(args, "xn") as keyspace:
        n1 = cluster.start_node(args, keyspace, 1, "xn1")
        try:
            n2 = cluster.start_node(args, keyspace, 2, "xn2")
            try:
                split = services.split({"node1": n1.pid, "node2": n2.pid}, [os.getpid()])
                out = asyncio.run(measure(args, n1, n2, split))
                gc = services.gc_pauses(split.wall_start, split.wall_start + args.duration)
                logs = {"node1": n1.log_warnings(), "node2": n2.log_warnings()}
            finally:
                n2.stop()
        finally:
            n1.stop()
    sends: SendRun = out.pop("sends")
    s = sends.summary()
    d, ack, cpu = s["delivery_latency"], s["ack_latency"], out["cpu_cores"]
    rate = d["count"] / args.duration / max(1, args.receivers_per_channel)
    result: dict[str, Any] = {
        "params": vars(args),
        "services": services.facts(),
        "offered_msgs_per_s": args.rate,
        **s,
        "cassandra_gc_pauses": gc,
        "node1_cpu_us_per_message": us_per(cpu.get("node1"), rate),
        "node2_cpu_us_per_message": us_per(cpu.get("node2"), rate),
        "node_logs": logs,
        "target_p99_ms": TARGET_P99_MS,
        "verdict": verdict(d["p99_ms"], TARGET_P99_MS, higher_is_better=False)
        if sends.complete
        else f"MISS ({s['missing_deliveries']} deliveries missing)",
        "headline": headline(
            delivery_p50_ms=(d["p50_ms"], "lower"), delivery_p99_ms=(d["p99_ms"], "lower"), node1_cpu_cores=(cpu["node1"], "lower")
        ),
        **out,
    }
    line = (
        f"{args.rate:.0f} msg/s offered for {args.duration:.0f}s over {args.channels} channels x {args.senders_per_channel} senders "
        f"on node 1, {args.receivers_per_channel} receiver(s) per channel on node 2 -> delivery p50 {d['p50_ms']:.2f} ms, "
        f"p99 {d['p99_ms']:.2f} ms, p99.9 {d['p999_ms']:.2f} ms, max {d['max_ms']:.2f} ms (ack p50 {ack['p50_ms']:.2f} / "
        f"p99 {ack['p99_ms']:.2f} ms; {s['deliveries']}/{s['sent'] * args.receivers_per_channel} delivered, "
        f"{s['duplicate_deliveries']} duplicates, {s['errors']} errors, {s['resyncs']} resyncs); CPU cores: {cluster.cpu_line(cpu)}; "
        f"{cluster.gc_line(gc)}"
    )
    report(args.name, result, line=line, target=f"p99 <= {TARGET_P99_MS:.0f} ms", checkout=args.checkout)
    if result["profile"]:
        print_profile(result["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
