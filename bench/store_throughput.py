"""Messages stored per second: one node on Cassandra + Redis, and the store on its own.

    .venv/bin/python -m bench.store_throughput [--mode both|node|store] [--profile]

Node (``--mode node``): starts ``python -m chat serve`` on the shared Cassandra + Redis (a
keyspace of its own), creates ``--channels`` group channels with ``--senders-per-channel``
sending sockets each (not subscribed: the node stores, acks and publishes to Redis;
``--subscribe`` adds the way back through the relay and a fan-out to every sender), and lets
every sender keep ``--window`` sends in flight (closed loop: a new send as soon as an ack
arrives). A node handles one socket's frames one after another, so the load comes from the number
of sockets. After ``--warmup`` s, acks/s are counted for ``--duration`` s: the node's saturated
store rate, with ack latency, errors and the CPU split.

Store (``--mode store``): this process builds the store with ``chat.app.build_store`` (the
schema comes from ``chat migrate``) and drives ``insert_message`` with N coroutines back to back
(``--levels``), then one at a time (the unloaded latency), and a plain ``get_read`` as the
driver's baseline. For each: ops/s, latency, and CPU µs per op of this process (the driver) and
of the Cassandra JVM. Skipped when ``--checkout`` names another tree: this process runs its own
tree's store code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from bench.harness import cluster
from bench.harness.load import closed_loop
from bench.harness.measure import ROOT, CpuSplit, Histogram, headline, parse_args, report, us_per, verdict
from bench.harness.node import add_node_args, pin_client
from bench.harness.profile import PySpy, print_profile
from bench.harness.wire import Peer, close_all, json_frame, open_peer

TARGET_PER_S = 5000.0


class Senders:
    """Closed-loop sending sockets: each keeps its window of sends in flight."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.measuring = self.stopping = False
        self.acks = self.deliveries = self.resyncs = 0
        self.latency = Histogram()
        self.errors: list[dict[str, Any]] = []
        self.sent_at: dict[int, float] = {}  # send id → when it went out
        self.route: dict[int, tuple[Peer, str]] = {}
        self.seq = 0

    def send(self, peer: Peer, channel: str) -> None:
        self.seq += 1
        self.sent_at[self.seq] = time.monotonic()
        self.route[self.seq] = (peer, channel)
        peer.send(json_frame({"op": "send", "id": self.seq, "channel": channel, "text": self.text, "client_msg_id": f"s{self.seq}"}))

    def _replied(self, i: int, now: float, ok: bool) -> None:
        t = self.sent_at.pop(i, None)
        peer, channel = self.route.pop(i, (None, ""))
        if ok and t is not None and self.measuring:
            self.acks += 1
            self.latency.record(now - t)
        if peer is not None and not self.stopping:
            self.send(peer, channel)

    def on_frame(self, payload: bytes, now: float) -> None:
        if payload.startswith(b'{"op":"ack"'):
            self._replied(orjson.loads(payload)["id"], now, True)
        elif payload.startswith(b'{"op":"message"'):
            self.deliveries += 1
        elif payload.startswith(b'{"op":"error"'):
            frame = orjson.loads(payload)
            self.errors.append(frame)
            if isinstance(frame.get("id"), int):
                self._replied(frame["id"], now, False)
        elif payload.startswith(b'{"op":"resync"'):
            self.resyncs += 1


async def node_phase(args: argparse.Namespace, keyspace: str, services: cluster.Services) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    node = await loop.run_in_executor(None, cluster.start_node, args, keyspace, 1, "storetp")
    try:
        target, senders = node.target, Senders("x" * args.text_size)
        peers: list[tuple[Peer, str]] = []
        for c in range(args.channels):
            members = [f"tp-c{c}-u{k}" for k in range(args.senders_per_channel)]
            ch = await loop.run_in_executor(None, target.create_channel, members[0], "group", f"tp {c}", members[1:])
            peers += [(await open_peer(target, u, senders.on_frame, channels=[ch] if args.subscribe else ()), ch) for u in members]
        busy_before = await loop.run_in_executor(None, cluster.settle)
        split = services.split({"node": node.pid}, [os.getpid()])
        for peer, ch in peers:
            for _ in range(args.window):
                senders.send(peer, ch)
        await asyncio.sleep(args.warmup)
        senders.measuring = True
        split.reset()
        profiler = PySpy(node.pid, min(args.duration, 10), f"{args.name}_node") if args.profile else None
        per_second: list[int] = []
        t0 = time.monotonic()
        for k in range(int(args.duration)):
            before = senders.acks
            await asyncio.sleep(t0 + k + 1 - time.monotonic())  # one-second measurement slots
            per_second.append(senders.acks - before)
        elapsed = time.monotonic() - t0
        cpu = split.read()
        senders.measuring, senders.stopping = False, True
        await close_all([p for p, _ in peers])
        rate = senders.acks / elapsed
        return {
            "acks_per_s": round(rate, 1),
            "acks_per_s_by_second": per_second,
            "ack_latency_closed_loop": senders.latency.summary(),
            "deliveries_total": senders.deliveries,
            "errors": len(senders.errors),
            "error_samples": senders.errors[:5],
            "resyncs": senders.resyncs,
            "cpu_cores": cpu,
            "machine_busy_before_start": busy_before,
            "cassandra_gc_pauses": services.gc_pauses(split.wall_start),
            "node_cpu_us_per_message": us_per(cpu.get("node"), rate),
            "cassandra_cpu_us_per_message": us_per(cpu.get("cassandra"), rate),
            "profile": await loop.run_in_executor(None, profiler.summary) if profiler else None,
            "node_log": node.log_warnings(),
        }
    finally:
        await loop.run_in_executor(None, node.stop)


async def measured(
    label: str, op: Callable[[int], Awaitable[object]], concurrency: int, duration_s: float, *, split: CpuSplit, idle: dict[str, float]
) -> dict[str, Any]:
    """``closed_loop`` with CPU per operation: this process's (the driver) and Cassandra's, gross
    and net of what Cassandra burns with no load (compactions, flushes); prints one line."""
    split.reset()
    run = await closed_loop(op, concurrency, duration_s)
    cpu, rate = split.read(), run.ops_per_s
    per_op = {k: us_per(cpu.get(k), rate) for k in ("loadgen", "cassandra")}
    net = us_per(max(0.0, cpu["cassandra"] - idle["cassandra"]) if "cassandra" in cpu else None, rate)
    lat = run.latency.summary()
    print(
        f"  store {label} x{concurrency}: {rate:.0f}/s, p50 {lat['p50_ms']:.2f} / p99 {lat['p99_ms']:.2f} ms, {run.errors} errors; "
        f"client {per_op['loadgen']} us/op, cassandra {per_op['cassandra']} us/op",
        flush=True,
    )
    return {
        "concurrency": concurrency,
        **run.summary(),
        "cpu_cores": cpu,
        "client_cpu_us_per_op": per_op["loadgen"],
        "cassandra_cpu_us_per_op": per_op["cassandra"],
        "cassandra_cpu_us_per_op_net_of_idle": net,
    }


async def store_phase(args: argparse.Namespace, keyspace: str, services: cluster.Services) -> dict[str, Any]:
    from chat.app import build_store
    from chat.config import from_env
    from chat.ids import SnowflakeGenerator, timestamp_ms
    from chat.models import Message

    ids = SnowflakeGenerator(1000 + os.getpid() % 20)
    text, tag, channels = "x" * args.text_size, f"{os.getpid()}-{int(time.time())}", [10_000 + c for c in range(args.channels)]

    async def insert(i: int) -> object:
        mid = ids.next_id()
        return await store.insert_message(Message(mid, channels[i % len(channels)], "bench", text, timestamp_ms(mid), f"{tag}-{i}"))

    async def read(i: int) -> object:
        return await store.get_read("nobody", channels[i % len(channels)])

    split = services.split({}, [os.getpid()])
    with tempfile.TemporaryDirectory() as data_dir:
        store = build_store(from_env({**cluster.store_env(args, keyspace), "CHAT_DATA_DIR": data_dir, "CHAT_NODE_ID": "bench"}))
        await store.open()
        try:
            split.reset()
            await asyncio.sleep(2.0)  # idle window: Cassandra's background CPU
            idle = split.read()
            await closed_loop(insert, 32, args.store_warmup)  # driver, JIT, the bucket cache
            out: dict[str, Any] = {"idle_cpu_cores": idle}
            out["insert_message"] = [
                await measured("insert_message", insert, n, args.store_duration, split=split, idle=idle) for n in args.levels
            ]
            out["read_baseline"] = await measured("get_read", read, args.concurrency, args.store_duration, split=split, idle=idle)
            out["serial"] = {
                name: await measured(name, op, 1, args.serial_duration, split=split, idle=idle)
                for name, op in (("insert_message", insert), ("get_read", read))
            }
        finally:
            await store.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["both", "node", "store"], default="both")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--senders-per-channel", type=int, default=8)
    parser.add_argument(
        "--window", type=int, default=2, help="sends in flight per socket (node mode); more sockets, not a larger window, raise the load"
    )
    parser.add_argument(
        "--subscribe", action="store_true", help="senders also subscribe (adds the relay's way back and a fan-out to every sender)"
    )
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (node mode)")
    parser.add_argument("--levels", default="16,64,256", help="insert_message concurrency levels (store mode)")
    parser.add_argument("--concurrency", type=int, default=64, help="coroutines for the read baseline (store mode)")
    parser.add_argument("--store-duration", type=float, default=6.0)
    parser.add_argument("--serial-duration", type=float, default=2.0)
    parser.add_argument("--store-warmup", type=float, default=3.0, help="seconds of insert_message before measuring")
    parser.add_argument("--text-size", type=int, default=100)
    cluster.add_cluster_args(parser)
    add_node_args(parser, url=False)
    quick = {
        "channels": 4,
        "senders_per_channel": 2,
        "warmup": 1.0,
        "duration": 2.0,
        "levels": "16",
        "store_duration": 1.0,
        "serial_duration": 0.5,
        "store_warmup": 0.5,
    }
    args = parse_args(parser, argv, name="store_throughput", quick=quick)
    args.levels = [int(x) for x in str(args.levels).split(",") if x]
    pin_client(args)

    services = cluster.Services(args)
    result: dict[str, Any] = {"params": vars(args), "services": services.facts(), "target_per_s": TARGET_PER_S}
    with cluster.bench_keyspace(args, "tp") as keyspace:
        if args.mode in ("both", "node"):
            node = result["node"] = asyncio.run(node_phase(args, keyspace, services))
            lat = node["ack_latency_closed_loop"]
            print(
                f"  node: {node['acks_per_s']:.0f} acks/s "
                f"({args.channels} channels x {args.senders_per_channel} senders x window {args.window}; "
                f"closed-loop ack p50 {lat['p50_ms']:.1f} / p99 {lat['p99_ms']:.1f} ms; {node['errors']} errors); "
                f"CPU cores: {cluster.cpu_line(node['cpu_cores'])}; per message: node {node['node_cpu_us_per_message']} us, "
                f"cassandra {node['cassandra_cpu_us_per_message']} us; {cluster.gc_line(node['cassandra_gc_pauses'])}",
                flush=True,
            )
            if node["profile"]:
                print_profile(node["profile"])
        if args.mode in ("both", "store") and args.checkout.resolve() == ROOT:
            result["store"] = asyncio.run(store_phase(args, keyspace, services))
    best_store = max((r["ops_per_s"] for r in result.get("store", {}).get("insert_message", [])), default=None)
    node_rate = result.get("node", {}).get("acks_per_s")
    main_value = node_rate if node_rate is not None else best_store
    result["verdict"] = verdict(main_value, TARGET_PER_S, higher_is_better=True)
    result["headline"] = headline(
        node_acks_per_s=(node_rate, "higher"),
        store_inserts_per_s=(best_store, "higher"),
        node_cpu_us_per_message=(result.get("node", {}).get("node_cpu_us_per_message"), "lower"),
    )
    line = f"node {node_rate if node_rate is not None else '-'} msg/s stored, store-level insert_message best {best_store or '-'}/s"
    report(args.name, result, line=line, target=f">= {TARGET_PER_S:.0f}/s", checkout=args.checkout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
