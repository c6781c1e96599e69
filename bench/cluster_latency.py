"""send→ack latency of one node on Cassandra + Redis at a fixed offered rate (open loop).

    .venv/bin/python -m bench.cluster_latency [--rate 1000] [--duration 20] [--profile]

The same measurement as ``bench.send_latency`` (its sockets, schedule and histograms are reused:
``--senders`` sockets + ``--subscribers`` sockets in one group channel, all subscribed, latency
from the *scheduled* send time to the ack), against a node started on the shared Cassandra
(``CHAT_CASSANDRA_CONSISTENCY=ONE``, a fresh keyspace dropped at the end) and Redis. Each
message is therefore: an LWT idempotency claim + the message insert in Cassandra (the bucket
index is written once per channel and 10-day bucket), the ack, a Redis ``PUBLISH``, and the
fan-out of what Redis relays back to the 12 subscribed sockets.

Reported next to the latency: the CPU split over the measured window (node process, Cassandra
JVM, Redis, this load generator, anything else on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, ClassVar

from bench import send_latency
from bench.cluster_common import (
    CpuSplit,
    add_cluster_args,
    bench_keyspace,
    cluster_facts,
    cpu_line,
    gc_line,
    node_log_stats,
    print_profile_groups,
    profile_groups,
    service_groups,
    settle,
    start_node,
)
from bench.common import RESULTS, PySpy, print_profile, verdict, write_result

TARGET_P99_MS = 20.0


class _SplitMeter:
    """Stands in for ``SystemCpu`` inside ``send_latency.run``: it is reset and read exactly at the
    measured window's edges, so the CPU split covers the same window as the latency."""

    instances: ClassVar[list[_SplitMeter]] = []
    groups: ClassVar[dict[str, list[int | None]]] = {}

    def __init__(self) -> None:
        self.split = CpuSplit(self.groups, main_thread_of=("node",))
        self.last: dict[str, float] = {}
        _SplitMeter.instances.append(self)

    def reset(self) -> None:
        self.split.reset()

    def read(self) -> float:
        self.last = self.split.read()
        return self.last["machine_busy"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0, help="offered messages per second (total)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="unrecorded seconds first")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--subscribers", type=int, default=2)
    parser.add_argument("--text-size", type=int, default=100, help="characters per message")
    parser.add_argument("--name", default="cluster_latency", help="results file name")
    add_cluster_args(parser)
    args = parser.parse_args(argv)

    with bench_keyspace(args, "lat") as keyspace:
        facts = cluster_facts(args, keyspace)
        server = start_node(args, keyspace, 1, "clat")
        try:
            busy_before = settle()
            _SplitMeter.groups = {"node": [server.pid], **service_groups(args), "loadgen": [os.getpid()]}
            send_latency.SystemCpu = _SplitMeter  # type: ignore[misc,assignment]
            # The profile goes to bench/results/<--name>.pyspy.txt, not over send_latency's.
            send_latency.PySpy = lambda pid, seconds, _name, **kw: PySpy(pid, seconds, args.name, **kw)  # type: ignore[misc,assignment]
            out = asyncio.run(send_latency.run(args, server.target, server))
            log_tail = server.log_tail(20)
            logstats = node_log_stats(server)
        finally:
            server.stop()
    bench: send_latency.LatencyBench = out.pop("bench")
    cpu = _SplitMeter.instances[-1].last if _SplitMeter.instances else {}
    gc = _SplitMeter.instances[-1].split.gc if _SplitMeter.instances else {}
    ack = bench.ack.summary()
    achieved = ack["count"] / args.duration
    result: dict[str, Any] = {
        "params": vars(args),
        "store": "Cassandra (shared service) + Redis relay",
        "cluster": facts,
        "offered_msgs_per_s": args.rate,
        "achieved_acks_per_s": round(achieved, 1),
        "ack_latency": ack,
        "delivery_latency_to_subscribers": bench.delivery.summary(),
        "client_send_lag": bench.send_lag.summary(),
        "sent": bench.n_total,
        "acked": bench.n_acked,
        "errors": len(bench.errors),
        "error_samples": bench.errors[:5],
        "resyncs": bench.resyncs,
        "cpu_cores": cpu,
        "cassandra_gc_pauses": gc,
        "machine_busy_before_start": busy_before,
        "node_cpu_us_per_message": round(cpu["node"] / achieved * 1e6, 1) if cpu and achieved else None,
        "cassandra_cpu_us_per_message": round(cpu["cassandra"] / achieved * 1e6, 1) if cpu and achieved else None,
        "target_p99_ms": TARGET_P99_MS,
        "verdict": verdict(ack["p99_ms"], TARGET_P99_MS, higher_is_better=False) if bench.n_acked == bench.n_total else "MISS (lost acks)",
        "node_log_tail": log_tail if bench.errors else "",
        "node_log": logstats,
        **out,
    }
    if result.get("profile"):
        result["profile_groups"] = profile_groups(RESULTS / f"{args.name}.pyspy.txt")
    path = write_result(args.name, result)
    d = result["delivery_latency_to_subscribers"]
    print(
        f"cluster_latency: {args.rate:.0f} msg/s offered for {args.duration:.0f}s over {args.senders} senders (Cassandra {facts['cassandra_version']}, "
        f"paxos {facts['paxos_variant']}) -> ack p50 {ack['p50_ms']:.2f} ms, p99 {ack['p99_ms']:.2f} ms, p99.9 {ack['p999_ms']:.2f} ms, max {ack['max_ms']:.2f} ms "
        f"(delivery p50 {d['p50_ms']:.2f} / p99 {d['p99_ms']:.2f} ms; {bench.n_acked}/{bench.n_total} acked, {len(bench.errors)} errors); "
        f"CPU cores: {cpu_line(cpu)}; {gc_line(gc)}; target p99 <= {TARGET_P99_MS:.0f} ms: {result['verdict']}  [bench/results/{path.name}]"
    )
    if result.get("profile"):
        print_profile(result["profile"])
        print_profile_groups(result["profile_groups"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
