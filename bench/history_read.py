"""Latest-50 history reads on Cassandra: through the node (``history`` op, HTTP GET) and the store alone.

    .venv/bin/python -m bench.history_read [--messages 5000] [--readers 10] [--rate 200] [--profile]

Starts ``chat serve`` on the shared Cassandra + Redis (a fresh keyspace, dropped at the end),
creates one group channel and fills it with ``--messages`` messages written straight through
:class:`CassandraMessageStore.insert_message` from this process (same keyspace, Snowflake worker
900; the bucket index is written as the node would). Then, each in its own window:

1. **``history`` op**: ``--readers`` WebSocket members ask for ``{"op":"history","limit":50}`` on an
   open-loop schedule (``--rate`` reads/s in total, round robin); latency runs from the scheduled
   time to the reply, and every reply must hold 50 messages with ``has_more``.
2. **HTTP**: ``GET /v1/channels/{id}/messages?limit=50`` at ``--http-rate`` reads/s (open loop,
   ``--readers`` keep-alive connections).
3. **Store alone**: ``CassandraMessageStore.history(channel, limit=50)`` in this process, one at a
   time (the unloaded latency), then ``--readers`` coroutines back to back (closed loop: the
   store's read capacity).

Each window reports latency, throughput and the CPU split (node, Cassandra, Redis, this process).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import httpx
import orjson

from bench.cluster_common import (
    CpuSplit,
    add_cluster_args,
    bench_keyspace,
    cluster_facts,
    cpu_line,
    gc_line,
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

TARGET_P99_MS = 15.0
_monotonic = time.monotonic


class Reader(RawWs):
    def __init__(self, state: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = state

    def on_text(self, payload: bytes, now: float) -> None:
        st = self.state
        if payload.startswith(b'{"op":"history"'):
            frame = orjson.loads(payload)
            i = frame.get("id")
            due = st["sched"].pop(i, None)
            if due is None:
                return
            if len(frame.get("messages", ())) != st["limit"] or not frame.get("has_more"):
                st["short"] += 1
            if st["measuring_from"] <= i:
                st["hist"].record(now - due)
            st["answered"] += 1
        elif payload.startswith(b'{"op":"error"'):
            st["errors"].append(orjson.loads(payload))


def _window(hist: Histogram, seconds: float, split: CpuSplit, cpu: dict[str, float], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    rate = hist.count / seconds if seconds else 0.0
    return {
        "latency": hist.summary(),
        "reads_per_s": round(rate, 1),
        "cpu_cores": cpu,
        "cassandra_gc_pauses": {k: v for k, v in split.gc.items() if k != "largest"},
        **(extra or {}),
    }


async def fill(args: argparse.Namespace, keyspace: str, channel: int) -> dict[str, Any]:
    from chat.ids import SnowflakeGenerator, timestamp_ms
    from chat.models import Message
    from chat.store.cassandra import CassandraMessageStore

    store = CassandraMessageStore([h.strip() for h in args.cassandra_hosts.split(",")], keyspace=keyspace, consistency=args.consistency)
    await store.open()
    ids = SnowflakeGenerator(900)
    text = "y" * args.text_size
    queue = list(range(args.messages))
    t0 = _monotonic()

    async def worker() -> None:
        while queue:
            k = queue.pop()
            mid = ids.next_id()
            await store.insert_message(Message(mid, channel, "filler", f"{k} {text}", timestamp_ms(mid), f"fill-{k}"))

    try:
        await asyncio.gather(*(worker() for _ in range(32)))
    finally:
        await store.close()
    return {"messages": args.messages, "seconds": round(_monotonic() - t0, 2)}


async def ws_phase(args: argparse.Namespace, server: BenchServer, channel: str, users: list[str]) -> dict[str, Any]:
    target = server.target
    state: dict[str, Any] = {"sched": {}, "hist": Histogram(), "short": 0, "answered": 0, "errors": [], "limit": 50, "measuring_from": 0}
    readers = []
    for user in users:
        path = f"{target.ws_path}?token={target.token(user)}"
        readers.append(await connect(lambda p=path: Reader(state, target.host, target.port, p), target.host, target.port))
    split = CpuSplit({"node": [server.pid], **service_groups(args), "loadgen": [os.getpid()]}, main_thread_of=("node",))
    n_warm = int(args.rate * args.warmup)
    n_total = n_warm + int(args.rate * args.duration)
    state["measuring_from"] = n_warm
    interval = 1.0 / args.rate
    t0 = _monotonic() + 0.1
    profiler = None
    i = 0
    while i < n_total:
        delay = t0 + i * interval - _monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = _monotonic()
        if i == n_warm:
            split.reset()
            if args.profile:
                profiler = PySpy(server.pid, args.duration, f"{args.name}_ws").start()
        while i < n_total and t0 + i * interval <= now:
            state["sched"][i] = t0 + i * interval
            readers[i % len(readers)].send_text(orjson.dumps({"op": "history", "id": i, "channel": channel, "limit": 50}))
            i += 1
    cpu = split.read()
    deadline = _monotonic() + 10
    while state["sched"] and _monotonic() < deadline:
        await asyncio.sleep(0.05)
    for r in readers:
        r.close()
    out = _window(state["hist"], args.duration, split, cpu, {"short_pages": state["short"], "unanswered": len(state["sched"]), "errors": len(state["errors"]), "error_samples": state["errors"][:3]})
    out["node_cpu_us_per_read"] = round(cpu["node"] / out["reads_per_s"] * 1e6, 1) if out["reads_per_s"] else None
    out["cassandra_cpu_us_per_read"] = round(cpu["cassandra"] / out["reads_per_s"] * 1e6, 1) if out["reads_per_s"] else None
    if profiler:
        await asyncio.get_running_loop().run_in_executor(None, profiler.wait)
        out["profile"] = profiler.summary()
    return out


async def http_phase(args: argparse.Namespace, server: BenchServer, channel: str, user: str) -> dict[str, Any]:
    target = server.target
    hist = Histogram()
    errors: list[str] = []
    short = [0]
    limits = httpx.Limits(max_connections=args.readers, max_keepalive_connections=args.readers)
    headers = {"Authorization": f"Bearer {target.token(user)}"}
    split = CpuSplit({"node": [server.pid], **service_groups(args), "loadgen": [os.getpid()]}, main_thread_of=("node",))
    n_warm = int(args.http_rate * args.warmup)
    n_total = n_warm + int(args.http_rate * args.http_duration)
    interval = 1.0 / args.http_rate
    async with httpx.AsyncClient(base_url=target.http_url, headers=headers, limits=limits, timeout=10) as client:

        async def one(i: int, due: float) -> None:
            try:
                r = await client.get(f"/v1/channels/{channel}/messages", params={"limit": 50})
                body = r.json()
                if r.status_code != 200 or len(body.get("messages", ())) != 50:
                    short[0] += 1
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            if i >= n_warm:
                hist.record(_monotonic() - due)

        tasks = []
        t0 = _monotonic() + 0.1
        for i in range(n_total):
            due = t0 + i * interval
            delay = due - _monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if i == n_warm:
                split.reset()
            tasks.append(asyncio.create_task(one(i, due)))
        cpu = split.read()
        await asyncio.gather(*tasks)
    return _window(hist, args.http_duration, split, cpu, {"short_pages": short[0], "errors": len(errors), "error_samples": errors[:3]})


async def store_phase(args: argparse.Namespace, keyspace: str, channel: int) -> dict[str, Any]:
    from chat.store.cassandra import CassandraMessageStore

    if args.patch:
        from bench.cassandra_variants import apply

        apply(args.patch)
    store = CassandraMessageStore([h.strip() for h in args.cassandra_hosts.split(",")], keyspace=keyspace, consistency=args.consistency)
    await store.open()
    split = CpuSplit({**service_groups(args), "loadgen": [os.getpid()]})
    out: dict[str, Any] = {}
    try:
        for _ in range(20):  # warm the connection and prepared statements
            await store.history(channel, limit=50)
        for label, concurrency, seconds in (("serial", 1, args.store_duration), (f"x{args.readers}", args.readers, args.store_duration)):
            hist = Histogram()
            short = [0]
            deadline = _monotonic() + seconds

            async def worker(deadline: float = deadline, hist: Histogram = hist, short: list[int] = short) -> None:
                while _monotonic() < deadline:
                    t = _monotonic()
                    page = await store.history(channel, limit=50)
                    hist.record(_monotonic() - t)
                    if len(page.messages) != 50 or not page.has_more:
                        short[0] += 1

            split.reset()
            t0 = _monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = _monotonic() - t0
            cpu = split.read()
            w = _window(hist, elapsed, split, cpu, {"concurrency": concurrency, "short_pages": short[0]})
            w["client_cpu_us_per_read"] = round(cpu["loadgen"] / w["reads_per_s"] * 1e6, 1) if w["reads_per_s"] else None
            w["cassandra_cpu_us_per_read"] = round(cpu["cassandra"] / w["reads_per_s"] * 1e6, 1) if w["reads_per_s"] else None
            out[label] = w
    finally:
        await store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000, help="messages in the channel")
    parser.add_argument("--readers", type=int, default=10, help="reader sockets / HTTP connections / store coroutines")
    parser.add_argument("--rate", type=float, default=200.0, help="history ops per second (total, open loop)")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds of the history-op window")
    parser.add_argument("--http-rate", type=float, default=100.0, help="HTTP reads per second (open loop)")
    parser.add_argument("--http-duration", type=float, default=10.0)
    parser.add_argument("--store-duration", type=float, default=5.0, help="seconds per store-level window")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--text-size", type=int, default=100)
    parser.add_argument("--name", default="history_read")
    add_cluster_args(parser)
    args = parser.parse_args(argv)

    users = [f"hr-{k}" for k in range(args.readers)]
    result: dict[str, Any] = {"params": vars(args), "target_p99_ms": TARGET_P99_MS}
    with bench_keyspace(args, "hr") as keyspace:
        result["cluster"] = cluster_facts(args, keyspace)
        server = start_node(args, keyspace, 1, "hist")
        try:
            channel = server.target.create_channel(users[0], "group", "history bench", users[1:])
            result["fill"] = asyncio.run(fill(args, keyspace, int(channel)))
            result["machine_busy_before_start"] = settle()
            result["ws_history_op"] = asyncio.run(ws_phase(args, server, channel, users))
            settle()
            result["http_get"] = asyncio.run(http_phase(args, server, channel, users[0]))
        finally:
            server.stop()
        settle()
        result["store_history"] = asyncio.run(store_phase(args, keyspace, int(channel)))
    ws, http, st = result["ws_history_op"], result["http_get"], result["store_history"]
    head = ws["latency"]["p99_ms"]
    ok = ws["short_pages"] == 0 and ws["unanswered"] == 0 and ws["errors"] == 0
    result["verdict"] = verdict(head, TARGET_P99_MS, higher_is_better=False) if ok else "MISS (short or missing pages)"
    path = write_result(args.name, result)
    serial, conc = st["serial"], st[f"x{args.readers}"]
    print(
        f"history_read: latest 50 of {args.messages} messages, {args.readers} readers -> history op at {args.rate:.0f}/s: "
        f"p50 {ws['latency']['p50_ms']:.2f} ms, p99 {ws['latency']['p99_ms']:.2f} ms, max {ws['latency']['max_ms']:.1f} ms "
        f"({ws['short_pages']} short, {ws['errors']} errors; CPU cores: {cpu_line(ws['cpu_cores'])}); "
        f"HTTP GET at {args.http_rate:.0f}/s: p50 {http['latency']['p50_ms']:.2f} / p99 {http['latency']['p99_ms']:.2f} ms; "
        f"store history(limit=50): serial p50 {serial['latency']['p50_ms']:.2f} / p99 {serial['latency']['p99_ms']:.2f} ms, "
        f"x{args.readers} {conc['reads_per_s']:.0f}/s at p50 {conc['latency']['p50_ms']:.2f} / p99 {conc['latency']['p99_ms']:.2f} ms; "
        f"{gc_line(ws['cassandra_gc_pauses'])} (history-op window); target p99 <= {TARGET_P99_MS:.0f} ms: {result['verdict']}  [bench/results/{path.name}]"
    )
    if ws.get("profile"):
        print_profile(ws["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
