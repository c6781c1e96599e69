"""send→ack latency of one node on Cassandra + Redis at a fixed offered rate (open loop).

    .venv/bin/python -m bench.cluster_latency [--rate 1000] [--duration 20] [--profile]

``bench.send_latency``'s run (``--senders`` + ``--subscribers`` sockets in one group channel, all
subscribed, latency from the *scheduled* send time) against a node on the shared Cassandra
(``CHAT_CASSANDRA_CONSISTENCY=ONE``, a fresh keyspace dropped at the end) and Redis. Each message
is an LWT idempotency claim + the insert in Cassandra, the ack, a Redis ``PUBLISH`` and the
fan-out of what Redis relays back to the 12 subscribed sockets. Reported next to the latency:
the CPU split of the measured window (node and its event-loop thread, Cassandra JVM, Redis,
this load generator, anything else) and Cassandra's GC pauses in it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from typing import Any

from bench import send_latency
from bench.harness import cluster
from bench.harness.load import SendRun
from bench.harness.measure import headline, parse_args, report, us_per, verdict
from bench.harness.node import add_node_args, pin_client
from bench.harness.profile import print_profile

TARGET_P99_MS = 20.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    send_latency.add_latency_args(parser, rate=1000.0)
    cluster.add_cluster_args(parser)
    add_node_args(parser, url=False)
    args = parse_args(parser, argv, name="cluster_latency", quick=send_latency.QUICK)
    pin_client(args)

    services = cluster.Services(args)
    with cluster.bench_keyspace(args, "lat") as keyspace:
        node = cluster.start_node(args, keyspace, 1, "clat")
        try:
            busy_before = cluster.settle()
            split = services.split({"node": node.pid}, [os.getpid()])
            out = asyncio.run(send_latency.run(args, node.target, split, node.pid if args.profile else None))
            gc = services.gc_pauses(split.wall_start, split.wall_start + args.duration)
            logs = node.log_warnings()
        finally:
            node.stop()
    sends: SendRun = out.pop("sends")
    s = sends.summary()
    ack, d, cpu = s["ack_latency"], s["delivery_latency"], out["cpu_cores"]
    rate = s["achieved_acks_per_s"]
    result: dict[str, Any] = {
        "params": vars(args),
        "services": services.facts(),
        "offered_msgs_per_s": args.rate,
        **s,
        "machine_busy_before_start": busy_before,
        "cassandra_gc_pauses": gc,
        "node_cpu_us_per_message": us_per(cpu.get("node"), rate),
        "cassandra_cpu_us_per_message": us_per(cpu.get("cassandra"), rate),
        "node_log": logs,
        "target_p99_ms": TARGET_P99_MS,
        "verdict": verdict(ack["p99_ms"], TARGET_P99_MS, higher_is_better=False) if sends.complete else "MISS (lost acks or deliveries)",
        "headline": headline(
            ack_p50_ms=(ack["p50_ms"], "lower"), ack_p99_ms=(ack["p99_ms"], "lower"), node_cpu_cores=(cpu["node"], "lower")
        ),
        **out,
    }
    line = (
        f"{args.rate:.0f} msg/s offered for {args.duration:.0f}s over {args.senders} senders "
        f"(Cassandra {result['services'].get('cassandra_version', '?')}) -> ack p50 {ack['p50_ms']:.2f} ms, "
        f"p99 {ack['p99_ms']:.2f} ms, p99.9 {ack['p999_ms']:.2f} ms, max {ack['max_ms']:.2f} ms (delivery p50 {d['p50_ms']:.2f} / "
        f"p99 {d['p99_ms']:.2f} ms; {s['acked']}/{s['sent']} acked, {s['errors']} errors); CPU cores: {cluster.cpu_line(cpu)}; "
        f"{cluster.gc_line(gc)}"
    )
    report(args.name, result, line=line, target=f"p99 <= {TARGET_P99_MS:.0f} ms", checkout=args.checkout)
    if result["profile"]:
        print_profile(result["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
