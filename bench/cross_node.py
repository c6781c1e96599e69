"""Cross-node delivery: send on node 1, receive on node 2 (shared Cassandra + Redis), open loop.

    .venv/bin/python -m bench.cross_node [--rate 2000] [--channels 20] [--duration 20] [--profile]

Starts two ``chat serve`` nodes (``CHAT_WORKER_ID`` 1 and 2) on the shared Cassandra (a fresh
keyspace, dropped at the end) and Redis. ``--channels`` group channels each get
``--senders-per-channel`` sending sockets on node 1 (not subscribed, so node 1 only stores and
publishes) and ``--receivers-per-channel`` subscribed sockets on node 2. Sends follow a fixed
schedule across all senders (message *i* is due at ``t0 + i/rate`` on sender ``i % senders``, in
that sender's channel); the delivery latency runs from the *scheduled* time to the frame's
arrival on node 2 (store write on node 1 → Redis ``PUBLISH`` → node 2's relay reader → fan-out),
so a stall anywhere shows in full. The sender's ack latency is reported too, and every message
is checked to arrive exactly once per receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import orjson

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
from bench.common import (
    BenchServer,
    Histogram,
    PySpy,
    print_profile,
    verdict,
    write_result,
)
from bench.wsclient import RawWs, connect

TARGET_P99_MS = 25.0
_monotonic = time.monotonic


class Run:
    def __init__(self, rate: float, warmup_s: float, duration_s: float, receivers_per_channel: int) -> None:
        self.n_warm = int(rate * warmup_s)
        self.n_total = self.n_warm + int(rate * duration_s)
        self.sched = [0.0] * self.n_total
        self.acked = bytearray(self.n_total)
        self.got = bytearray(self.n_total)  # deliveries per message (≤ receivers_per_channel expected)
        self.expect = receivers_per_channel
        self.ack = Histogram()
        self.delivery = Histogram()
        self.send_lag = Histogram()
        self.errors: list[dict[str, Any]] = []
        self.resyncs = 0
        self.duplicates = 0
        self.n_acked = 0
        self.n_delivered = 0
        self.done = asyncio.get_running_loop().create_future()
        # Worst delivery latency per 100 ms of scheduled send time (measured window only):
        # lines the stalls up with the Cassandra GC pauses reported next to it.
        self.timeline: dict[int, float] = {}
        self.t_measure = 0.0

    def _check_done(self) -> None:
        if self.n_acked == self.n_total and self.n_delivered >= self.n_total * self.expect and not self.done.done():
            self.done.set_result(None)

    def on_ack(self, payload: bytes, now: float) -> None:
        i = orjson.loads(payload).get("id")
        if not isinstance(i, int) or not 0 <= i < self.n_total or self.acked[i]:
            return
        self.acked[i] = 1
        self.n_acked += 1
        if i >= self.n_warm:
            self.ack.record(now - self.sched[i])
        self._check_done()

    def on_delivery(self, payload: bytes, now: float) -> None:
        k = payload.rfind(b'"client_msg_id":"x')
        if k < 0:
            return
        end = payload.find(b'"', k + 18)
        i = int(payload[k + 18 : end])
        if not 0 <= i < self.n_total:
            return
        if self.got[i] >= self.expect:
            self.duplicates += 1
            return
        self.got[i] += 1
        self.n_delivered += 1
        if i >= self.n_warm:
            lat = now - self.sched[i]
            self.delivery.record(lat)
            slot = int((self.sched[i] - self.t_measure) * 10)
            if lat * 1000 > self.timeline.get(slot, 0.0):
                self.timeline[slot] = round(lat * 1000, 1)
        self._check_done()


class Peer(RawWs):
    def __init__(self, run: Run, role: str, channel: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run = run
        self.role = role
        self.channel = channel
        self.subscribed = asyncio.get_running_loop().create_future()

    def on_text(self, payload: bytes, now: float) -> None:
        run = self.run
        if payload.startswith(b'{"op":"message"'):
            if self.role == "recv":
                run.on_delivery(payload, now)
        elif payload.startswith(b'{"op":"ack"'):
            run.on_ack(payload, now)
        elif payload.startswith(b'{"op":"subscribed"'):
            if not self.subscribed.done():
                self.subscribed.set_result(None)
        elif payload.startswith(b'{"op":"error"'):
            run.errors.append(orjson.loads(payload))
            if not self.subscribed.done():
                self.subscribed.set_exception(RuntimeError(payload.decode()))
        elif payload.startswith(b'{"op":"resync"'):
            run.resyncs += 1


async def measure(args: argparse.Namespace, n1: BenchServer, n2: BenchServer) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    t1, t2 = n1.target, n2.target
    run = Run(args.rate, args.warmup, args.duration, args.receivers_per_channel)
    senders: list[Peer] = []
    receivers: list[Peer] = []
    for c in range(args.channels):
        snd = [f"xn-c{c}-s{k}" for k in range(args.senders_per_channel)]
        rcv = [f"xn-c{c}-r{k}" for k in range(args.receivers_per_channel)]
        ch = await loop.run_in_executor(None, t1.create_channel, snd[0], "group", f"xn {c}", snd[1:] + rcv)
        for user in snd:
            path = f"{t1.ws_path}?token={t1.token(user)}"
            senders.append(await connect(lambda ch=ch, p=path: Peer(run, "send", ch, t1.host, t1.port, p), t1.host, t1.port))
        for user in rcv:
            path = f"{t2.ws_path}?token={t2.token(user)}"
            receivers.append(await connect(lambda ch=ch, p=path: Peer(run, "recv", ch, t2.host, t2.port, p), t2.host, t2.port))
    for r in receivers:
        r.send_text(orjson.dumps({"op": "subscribe", "id": "sub", "channels": [r.channel]}))
    await asyncio.wait_for(asyncio.gather(*(r.subscribed for r in receivers)), 30)
    # Senders interleave channels: consecutive messages go to different channels.
    spc = args.senders_per_channel
    senders = [senders[c * spc + k] for k in range(spc) for c in range(args.channels)]
    busy_before = await loop.run_in_executor(None, settle)

    split = CpuSplit({"node1": [n1.pid], "node2": [n2.pid], **service_groups(args), "loadgen": [os.getpid()]}, main_thread_of=("node1", "node2"))
    profiler = None
    dumps = orjson.dumps
    n_send = len(senders)
    text = "x" * args.text_size
    interval = 1.0 / args.rate
    t0 = _monotonic() + 0.2
    i = 0
    measuring = False
    while i < run.n_total:
        delay = t0 + i * interval - _monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = _monotonic()
        if not measuring and i >= run.n_warm:
            measuring = True
            split.reset()
            run.t_measure = t0 + i * interval
            if args.profile:
                profiled = n1 if args.profile_node == 1 else n2
                profiler = PySpy(profiled.pid, min(args.duration, 15), f"{args.name}_node{args.profile_node}").start()
        while i < run.n_total and t0 + i * interval <= now:
            due = t0 + i * interval
            run.sched[i] = due
            peer = senders[i % n_send]
            peer.send_text(dumps({"op": "send", "id": i, "channel": peer.channel, "text": text, "client_msg_id": f"x{i}"}))
            if i >= run.n_warm:
                run.send_lag.record(now - due)
            i += 1
    cpu = split.read()
    gc = split.gc
    try:
        await asyncio.wait_for(asyncio.shield(run.done), 15)
    except TimeoutError:
        pass
    await asyncio.sleep(0.3)
    for p in senders + receivers:
        p.close()
    profile = None
    if profiler:
        await loop.run_in_executor(None, profiler.wait)
        profile = profiler.summary()
        profile["groups"] = profile_groups(profiler.raw)
    return {"run": run, "cpu_cores": cpu, "cassandra_gc_pauses": gc, "machine_busy_before_start": busy_before, "profile": profile}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000.0, help="offered messages per second (total, over all channels)")
    parser.add_argument("--channels", type=int, default=20)
    parser.add_argument("--senders-per-channel", type=int, default=2)
    parser.add_argument("--receivers-per-channel", type=int, default=1)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="unrecorded seconds first")
    parser.add_argument("--text-size", type=int, default=100)
    parser.add_argument("--profile-node", type=int, choices=[1, 2], default=1, help="which node --profile samples (1: the sending node)")
    parser.add_argument("--timeline-ms", type=float, default=25.0, help="keep 100 ms slots whose worst delivery exceeded this (results file)")
    parser.add_argument("--name", default="cross_node")
    add_cluster_args(parser)
    args = parser.parse_args(argv)

    with bench_keyspace(args, "xn") as keyspace:
        facts = cluster_facts(args, keyspace)
        n1 = start_node(args, keyspace, 1, "xn1")  # migrates; the second node then finds the schema
        try:
            n2 = start_node(args, keyspace, 2, "xn2")
            try:
                out = asyncio.run(measure(args, n1, n2))
                tails = {"node1": n1.log_tail(15), "node2": n2.log_tail(15)}
                logstats = {"node1": node_log_stats(n1), "node2": node_log_stats(n2)}
            finally:
                n2.stop()
        finally:
            n1.stop()
    run: Run = out.pop("run")
    d = run.delivery.summary()
    ack = run.ack.summary()
    missing = run.n_total * run.expect - run.n_delivered
    cpu = out["cpu_cores"]
    rate_measured = d["count"] / args.duration / max(1, run.expect)
    result: dict[str, Any] = {
        "params": vars(args),
        "cluster": facts,
        "offered_msgs_per_s": args.rate,
        "delivery_latency_node1_to_node2": d,
        "ack_latency_on_node1": ack,
        "client_send_lag": run.send_lag.summary(),
        "sent": run.n_total,
        "acked": run.n_acked,
        "deliveries": run.n_delivered,
        "missing_deliveries": missing,
        "duplicate_deliveries": run.duplicates,
        "errors": len(run.errors),
        "error_samples": run.errors[:5],
        "resyncs": run.resyncs,
        "node1_cpu_us_per_message": round(cpu["node1"] / rate_measured * 1e6, 1) if rate_measured else None,
        "node2_cpu_us_per_message": round(cpu["node2"] / rate_measured * 1e6, 1) if rate_measured else None,
        "target_p99_ms": TARGET_P99_MS,
        "verdict": verdict(d["p99_ms"], TARGET_P99_MS, higher_is_better=False) if missing == 0 else f"MISS ({missing} deliveries missing)",
        "node_log_tails": tails,
        "node_logs": logstats,
        "worst_delivery_ms_per_100ms": {f"{k / 10:.1f}": v for k, v in sorted(run.timeline.items()) if v > args.timeline_ms},
        **out,
    }
    path = write_result(args.name, result)
    print(
        f"cross_node: {args.rate:.0f} msg/s offered for {args.duration:.0f}s over {args.channels} channels x {args.senders_per_channel} senders on node 1, "
        f"{args.receivers_per_channel} receiver(s) per channel on node 2 -> delivery p50 {d['p50_ms']:.2f} ms, p99 {d['p99_ms']:.2f} ms, "
        f"p99.9 {d['p999_ms']:.2f} ms, max {d['max_ms']:.2f} ms (ack p50 {ack['p50_ms']:.2f} / p99 {ack['p99_ms']:.2f} ms; "
        f"{run.n_delivered}/{run.n_total * run.expect} delivered, {run.duplicates} duplicates, {len(run.errors)} errors, {run.resyncs} resyncs); "
        f"CPU cores: {cpu_line(cpu)}; {gc_line(out['cassandra_gc_pauses'])}; target p99 <= {TARGET_P99_MS:.0f} ms: {result['verdict']}  "
        f"[bench/results/{path.name}]"
    )
    if result.get("profile"):
        print_profile(result["profile"])
        print_profile_groups(result["profile"]["groups"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
