"""Messages stored per second: one node on Cassandra + Redis, and the store on its own.

    .venv/bin/python -m bench.store_throughput [--mode both|node|store] [--profile]

**Node** (``--mode node``): starts ``chat serve`` on the shared Cassandra + Redis (a keyspace of
its own), creates ``--channels`` group channels with ``--senders-per-channel`` sending sockets
each (not subscribed: the node stores, acks and publishes to Redis; ``--subscribe`` adds the way
back through the relay and a fan-out to every sender), and lets every sender keep ``--window``
sends queued (closed loop: a new send as soon as an ack arrives). A node handles one socket's
frames one after another, so the load comes from the number of sockets. After ``--warmup`` s, acks/s are counted for ``--duration`` s: the
node's saturated store rate. Ack latency, errors and the CPU split are reported.

**Store** (``--mode store``): this process opens :class:`CassandraMessageStore` itself and
drives ``insert_message`` with N concurrent coroutines (``--levels``), then each part of the
per-message cost on its own (``--concurrency`` coroutines, and one at a time for the unloaded
latency): the LWT idempotency claim (``INSERT … IF NOT EXISTS``), the bucket-index write, the
message insert, a plain read as a driver baseline, and the relay's Redis ``PUBLISH``. For each:
ops/s, latency, and CPU µs per op of this process (driver) and of the Cassandra JVM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
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
from bench.common import Histogram, PySpy, print_profile, verdict, write_result
from bench.wsclient import RawWs, connect

TARGET_PER_S = 5000.0
_monotonic = time.monotonic


# Node: closed-loop senders


class Sender(RawWs):
    def __init__(self, run: NodeRun, channel: str, index: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run = run
        self.channel = channel
        self.index = index
        self.seq = 0
        self.sent_at: dict[int, float] = {}
        self.subscribed = asyncio.get_running_loop().create_future()

    def send_one(self) -> None:
        self.seq += 1
        i = self.seq
        self.sent_at[i] = _monotonic()
        self.send_text(orjson.dumps({"op": "send", "id": i, "channel": self.channel, "text": self.run.text, "client_msg_id": f"s{self.index}-{i}"}))

    def on_text(self, payload: bytes, now: float) -> None:
        if payload.startswith(b'{"op":"ack"'):
            i = orjson.loads(payload)["id"]
            t = self.sent_at.pop(i, None)
            if t is not None:
                self.run.on_ack(now - t, now)
            if not self.run.stopping:
                self.send_one()
        elif payload.startswith(b'{"op":"message"'):
            self.run.deliveries += 1
        elif payload.startswith(b'{"op":"subscribed"'):
            if not self.subscribed.done():
                self.subscribed.set_result(None)
        elif payload.startswith(b'{"op":"error"'):
            frame = orjson.loads(payload)
            self.run.errors.append(frame)
            if not self.subscribed.done():
                self.subscribed.set_exception(RuntimeError(payload.decode()))
            elif frame.get("id") in self.sent_at:
                self.sent_at.pop(frame["id"], None)
                if not self.run.stopping:
                    self.send_one()
        elif payload.startswith(b'{"op":"resync"'):
            self.run.resyncs += 1


class NodeRun:
    def __init__(self, text: str) -> None:
        self.text = text
        self.measuring = False
        self.stopping = False
        self.acks = 0
        self.acks_total = 0
        self.deliveries = 0
        self.lat = Histogram()
        self.errors: list[dict[str, Any]] = []
        self.resyncs = 0
        self.per_second: list[int] = []

    def on_ack(self, seconds: float, now: float) -> None:
        self.acks_total += 1
        if self.measuring:
            self.acks += 1
            self.lat.record(seconds)


async def node_phase(args: argparse.Namespace, keyspace: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    server = await loop.run_in_executor(None, lambda: start_node(args, keyspace, 1, "storetp"))
    try:
        target = server.target
        channels: list[str] = []
        users: list[list[str]] = []
        for c in range(args.channels):
            members = [f"tp-c{c}-u{k}" for k in range(args.senders_per_channel)]
            channels.append(await loop.run_in_executor(None, target.create_channel, members[0], "group", f"tp {c}", members[1:]))
            users.append(members)
        run = NodeRun("x" * args.text_size)
        senders: list[Sender] = []
        n = 0
        for ch, members in zip(channels, users):
            for user in members:
                path = f"{target.ws_path}?token={target.token(user)}"
                idx = n
                senders.append(await connect(lambda ch=ch, idx=idx, p=path: Sender(run, ch, idx, target.host, target.port, p), target.host, target.port))
                n += 1
        if args.subscribe:
            for s in senders:
                s.send_text(orjson.dumps({"op": "subscribe", "id": "sub", "channels": [s.channel]}))
            await asyncio.wait_for(asyncio.gather(*(s.subscribed for s in senders)), 30)
        busy_before = await loop.run_in_executor(None, settle)
        split = CpuSplit({"node": [server.pid], **service_groups(args), "loadgen": [os.getpid()]}, main_thread_of=("node",))
        for s in senders:
            for _ in range(args.window):
                s.send_one()
        await asyncio.sleep(args.warmup)
        run.measuring = True
        split.reset()
        profiler = PySpy(server.pid, min(args.duration, 10), "store_throughput_node").start() if args.profile else None
        t0 = _monotonic()
        last = 0
        for _ in range(int(args.duration)):
            await asyncio.sleep(t0 + len(run.per_second) + 1 - _monotonic())
            run.per_second.append(run.acks - last)
            last = run.acks
        elapsed = _monotonic() - t0
        cpu = split.read()
        gc = split.gc
        run.measuring = False
        run.stopping = True
        await asyncio.sleep(1.0)
        for s in senders:
            s.close()
        profile = None
        if profiler:
            await loop.run_in_executor(None, profiler.wait)
            profile = profiler.summary()
            profile["groups"] = profile_groups(profiler.raw)
        rate = run.acks / elapsed
        return {
            "acks_per_s": round(rate, 1),
            "acks_per_s_by_second": run.per_second,
            "ack_latency_closed_loop": run.lat.summary(),
            "deliveries_total": run.deliveries,
            "errors": len(run.errors),
            "error_samples": run.errors[:5],
            "resyncs": run.resyncs,
            "cpu_cores": cpu,
            "machine_busy_before_start": busy_before,
            "cassandra_gc_pauses": gc,
            "node_cpu_us_per_message": round(cpu["node"] / rate * 1e6, 1) if rate else None,
            "cassandra_cpu_us_per_message": round(cpu["cassandra"] / rate * 1e6, 1) if rate else None,
            "profile": profile,
            "node_log_tail": server.log_tail(15) if run.errors else "",
            "node_log": node_log_stats(server),
        }
    finally:
        await loop.run_in_executor(None, server.stop)


# Store: the adapter and its parts, in this process


async def drive(
    op: Callable[[int], Awaitable[Any]], concurrency: int, duration_s: float, split: CpuSplit, idle: dict[str, float] | None = None
) -> dict[str, Any]:
    """``concurrency`` coroutines calling ``op(i)`` back to back for ``duration_s``. CPU per op is
    net of ``idle`` (the cores each process used with no load: Cassandra's background work)."""
    lat = Histogram()
    errors = [0]
    counter = [0]
    deadline = _monotonic() + duration_s
    sample: list[str] = []

    async def worker() -> None:
        while True:
            now = _monotonic()
            if now >= deadline:
                return
            counter[0] += 1
            try:
                await op(counter[0])
            except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                errors[0] += 1
                if len(sample) < 3:
                    sample.append(f"{type(exc).__name__}: {exc}")
                continue
            lat.record(_monotonic() - now)

    split.reset()
    t0 = _monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = _monotonic() - t0
    cpu = split.read()
    rate = lat.count / elapsed
    idle = idle or {}

    def per_op(name: str, net: bool = False) -> float | None:
        cores = max(0.0, cpu[name] - idle.get(name, 0.0)) if net else cpu[name]
        return round(cores / rate * 1e6, 1) if rate else None

    return {
        "concurrency": concurrency,
        "ops_per_s": round(rate, 1),
        "latency": lat.summary(),
        "errors": errors[0],
        "error_samples": sample,
        "cpu_cores": cpu,
        # Gross: all the CPU the process used during the run, divided by the operations.
        "client_cpu_us_per_op": per_op("loadgen"),
        "cassandra_cpu_us_per_op": per_op("cassandra"),
        "redis_cpu_us_per_op": per_op("redis"),
        "cassandra_cpu_us_per_op_net_of_idle": per_op("cassandra", net=True),
    }


async def store_phase(args: argparse.Namespace, keyspace: str) -> dict[str, Any]:
    from chat.ids import SnowflakeGenerator, timestamp_ms
    from chat.models import Message
    from chat.relay.redis import RedisRelay
    from chat.store.cassandra import IDEMPOTENCY_TTL_S, CassandraMessageStore, bucket_of

    if args.patch:
        from bench.cassandra_variants import apply

        apply(args.patch)
    store = CassandraMessageStore(
        [h.strip() for h in args.cassandra_hosts.split(",")], keyspace=keyspace, consistency=args.consistency, migrate=True
    )
    await store.open()
    relay = RedisRelay(args.redis_url, prefix=f"bench-{os.getpid()}:")
    await relay.start(lambda topic, payload: None, lambda topics: None)
    ids = SnowflakeGenerator(1000 + os.getpid() % 20)
    text = "x" * args.text_size
    run_tag = f"{os.getpid()}-{int(time.time())}"
    channels = [10_000 + c for c in range(args.channels)]
    nch = len(channels)
    split = CpuSplit({"loadgen": [os.getpid()], **service_groups(args)})
    payload = orjson.dumps({"op": "message", "message": {"id": "1" * 19, "channel": "1" * 19, "sender": "someone", "text": text, "ts": 1, "client_msg_id": "c" * 12}})

    async def insert(i: int) -> Any:
        mid = ids.next_id()
        return await store.insert_message(Message(mid, channels[i % nch], "bench", text, timestamp_ms(mid), f"{run_tag}-i{i}"))

    def claim_for(tag: str) -> Callable[[int], Awaitable[Any]]:
        async def claim(i: int) -> Any:
            mid = ids.next_id()
            return await store._cas("claim_key", (channels[i % nch], "bench", f"{run_tag}-{tag}{i}", mid, text, IDEMPOTENCY_TTL_S))

        return claim

    async def put_message(i: int) -> Any:
        mid = ids.next_id()
        return await store._execute("put_message", (channels[i % nch], bucket_of(mid), mid, "bench", text, f"{run_tag}-p{i}"))

    async def put_bucket(i: int) -> Any:
        return await store._execute("put_bucket", (channels[i % nch], bucket_of(ids.next_id())))

    async def read_one(i: int) -> Any:
        return await store._execute("get_read", ("nobody", channels[i % nch]))

    async def publish(i: int) -> Any:
        return await relay.publish(f"c:{channels[i % nch]}", payload)

    busy_before = await asyncio.get_running_loop().run_in_executor(None, settle)
    split.reset()
    await asyncio.sleep(2.0)
    idle = split.read()
    idle["machine_busy_after_settle"] = busy_before
    out: dict[str, Any] = {"idle_cpu_cores": idle, "insert_message": [], "parts": {}, "parts_serial": {}}
    print(f"  idle: {cpu_line(idle)}", flush=True)
    try:
        # Warm the driver, the JIT and the bucket cache.
        await drive(insert, 32, args.store_warmup, split)
        for level in args.levels:
            profiler = PySpy(os.getpid(), args.store_duration, "store_throughput_store").start() if args.profile and level == args.levels[-1] else None
            r = await drive(insert, level, args.store_duration, split, idle)
            if profiler is not None:
                await asyncio.get_running_loop().run_in_executor(None, profiler.wait)
                out["profile"] = profiler.summary()
                print_profile(out["profile"])
            out["insert_message"].append(r)
            print(f"  store insert_message x{level}: {r['ops_per_s']:.0f}/s, p50 {r['latency']['p50_ms']:.2f} p99 {r['latency']['p99_ms']:.2f} ms, "
                  f"{r['errors']} errors; CPU {cpu_line(r['cpu_cores'])}", flush=True)
        parts = {
            "claim_lwt": claim_for("c"),
            "put_message": put_message,
            "put_bucket": put_bucket,
            "read_baseline": read_one,
            "relay_publish": publish,
        }
        parts = {k: v for k, v in parts.items() if k in args.parts}
        for name, fn in parts.items():
            for level in args.publish_levels if name == "relay_publish" else [args.concurrency]:
                r = await drive(fn, level, args.part_duration, split, idle)
                out["parts"][name if level == args.concurrency else f"{name}_x{level}"] = r
                print(f"  part {name} x{level}: {r['ops_per_s']:.0f}/s, p50 {r['latency']['p50_ms']:.2f} p99 {r['latency']['p99_ms']:.2f} "
                      f"max {r['latency']['max_ms']:.1f} ms, {r['errors']} errors; client {r['client_cpu_us_per_op']} us/op, "
                      f"cassandra {r['cassandra_cpu_us_per_op']} us/op, redis {r['redis_cpu_us_per_op']} us/op", flush=True)
        for name, fn in {"insert_message": insert, **parts}.items():
            r = await drive(fn, 1, args.serial_duration, split, idle)
            out["parts_serial"][name] = r
            print(f"  serial {name}: {r['ops_per_s']:.0f}/s, p50 {r['latency']['p50_ms']:.3f} p99 {r['latency']['p99_ms']:.3f} ms; "
                  f"client {r['client_cpu_us_per_op']} us/op, cassandra {r['cassandra_cpu_us_per_op']} us/op", flush=True)
    finally:
        await relay.close()
        await store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["both", "node", "store"], default="both")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--senders-per-channel", type=int, default=8)
    parser.add_argument("--window", type=int, default=2, help="sends queued per sender socket (node mode; a node handles one socket's frames one at a time, so more sockets, not a larger window, raise the load)")
    parser.add_argument("--subscribe", action="store_true", help="senders also subscribe to their channel (adds the relay's way back and a fan-out to every sender)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (node mode)")
    parser.add_argument("--levels", default="16,64,256", help="insert_message concurrency levels (store mode)")
    parser.add_argument("--concurrency", type=int, default=64, help="coroutines per part (store mode)")
    parser.add_argument("--store-duration", type=float, default=6.0)
    parser.add_argument("--part-duration", type=float, default=5.0)
    parser.add_argument("--serial-duration", type=float, default=2.0)
    parser.add_argument("--store-warmup", type=float, default=3.0, help="seconds of insert_message before measuring (JIT, caches)")
    parser.add_argument("--parts", default="claim_lwt,put_message,put_bucket,read_baseline,relay_publish", help="which parts to measure alone")
    parser.add_argument("--publish-levels", default="16,64", help="relay publish concurrency levels (the pool holds 16 connections)")
    parser.add_argument("--text-size", type=int, default=100)
    parser.add_argument("--name", default="store_throughput")
    add_cluster_args(parser)
    args = parser.parse_args(argv)
    args.levels = [int(x) for x in str(args.levels).split(",") if x]
    args.parts = [x for x in args.parts.split(",") if x]
    args.publish_levels = [int(x) for x in str(args.publish_levels).split(",") if x]

    result: dict[str, Any] = {"params": vars(args), "target_per_s": TARGET_PER_S}
    with bench_keyspace(args, "tp") as keyspace:
        result["cluster"] = cluster_facts(args, keyspace)
        if args.mode in ("both", "node"):
            node = asyncio.run(node_phase(args, keyspace))
            result["node"] = node
            print(
                f"store_throughput node: {node['acks_per_s']:.0f} acks/s ({args.channels} channels x {args.senders_per_channel} senders x window {args.window}; "
                f"closed-loop ack p50 {node['ack_latency_closed_loop']['p50_ms']:.1f} / p99 {node['ack_latency_closed_loop']['p99_ms']:.1f} ms; "
                f"{node['errors']} errors); CPU cores: {cpu_line(node['cpu_cores'])}; per message: node {node['node_cpu_us_per_message']} us, "
                f"cassandra {node['cassandra_cpu_us_per_message']} us; {gc_line(node['cassandra_gc_pauses'])}",
                flush=True,
            )
            if node["profile"]:
                print_profile(node["profile"])
                print_profile_groups(node["profile"]["groups"])
        if args.mode in ("both", "store"):
            result["store"] = asyncio.run(store_phase(args, keyspace))
    best_store = max((r["ops_per_s"] for r in result.get("store", {}).get("insert_message", [])), default=None)
    node_rate = result.get("node", {}).get("acks_per_s")
    headline = node_rate if node_rate is not None else best_store
    result["verdict"] = verdict(headline, TARGET_PER_S, higher_is_better=True) if headline is not None else "n/a"
    path = write_result(args.name, result)
    print(
        f"store_throughput: node {node_rate if node_rate is not None else '-'} msg/s stored, store-level insert_message best "
        f"{best_store if best_store is not None else '-'}/s; target >= {TARGET_PER_S:.0f}/s: {result['verdict']}  [bench/results/{path.name}]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
