"""Latest-50 history reads on Cassandra: through the node (``history`` op, HTTP GET) and the store alone.

    .venv/bin/python -m bench.history_read [--messages 5000] [--readers 10] [--rate 200] [--profile]

Starts ``python -m chat serve`` on the shared Cassandra + Redis (a fresh keyspace, dropped at the
end), creates one group channel and fills it with ``--messages`` messages through the HTTP API
(32 posts in flight). Then, each in its own window:

1. ``history`` op: ``--readers`` WebSocket members ask for ``{"op":"history","limit":50}`` on an
   open-loop schedule (``--rate`` reads/s in total, round robin); latency runs from the scheduled
   time to the reply, and every reply must hold 50 messages with ``has_more``.
2. HTTP: ``GET /v1/channels/{id}/messages?limit=50`` at ``--http-rate`` reads/s (open loop,
   ``--readers`` keep-alive connections).
3. The store alone: ``MessageStore.history(channel, limit=50)`` in this process (built by
   ``chat.app.build_store``), one at a time (the unloaded latency), then ``--readers`` coroutines
   back to back (the store's read capacity). Skipped when ``--checkout`` names another tree:
   this process runs its own tree's store code.

Each window reports latency, throughput and the CPU split (node, Cassandra, Redis, this process).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from bench.harness import cluster
from bench.harness.load import closed_loop, open_loop
from bench.harness.measure import ROOT, CpuSplit, Histogram, headline, parse_args, report, us_per, verdict
from bench.harness.node import Node, add_node_args, pin_client
from bench.harness.profile import PySpy, print_profile
from bench.harness.wire import close_all, json_frame, open_peer

TARGET_P99_MS = 15.0
LIMIT = 50


def window(hist: Histogram, seconds: float, cpu: dict[str, float], **extra: Any) -> dict[str, Any]:
    rate = hist.count / seconds if seconds else 0.0
    per_read = {f"{k}_cpu_us_per_read": us_per(cpu.get(k), rate) for k in ("node", "cassandra", "loadgen")}
    return {"latency": hist.summary(), "reads_per_s": round(rate, 1), "cpu_cores": cpu, **per_read, **extra}


async def fill(node: Node, channel: str, user: str, n: int, text: str) -> dict[str, Any]:
    """``n`` messages through ``POST /v1/channels/{id}/messages``, 32 in flight."""
    target = node.target
    todo = iter(range(n))
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=target.http_url, headers={"Authorization": f"Bearer {target.token(user)}"}, timeout=30) as client:

        async def poster() -> None:
            for k in todo:
                r = await client.post(f"/v1/channels/{channel}/messages", json={"text": f"{k} {text}", "client_msg_id": f"fill-{k}"})
                r.raise_for_status()

        await asyncio.gather(*(poster() for _ in range(32)))
    return {"messages": n, "seconds": round(time.monotonic() - t0, 2)}


async def ws_phase(args: argparse.Namespace, node: Node, channel: str, users: list[str], split: CpuSplit) -> dict[str, Any]:
    sched: dict[int, float] = {}  # requests in flight: id → scheduled time
    hist, trouble = Histogram(), {"short_pages": 0, "errors": 0}
    n_warm = int(args.rate * args.warmup)
    all_sent, drained = [False], asyncio.get_running_loop().create_future()

    def on_frame(payload: bytes, now: float) -> None:
        if not payload.startswith((b'{"op":"history"', b'{"op":"error"')):
            return
        frame = orjson.loads(payload)
        due = sched.pop(frame.get("id"), None)
        if frame["op"] == "error":
            trouble["errors"] += 1
        elif due is not None:
            if len(frame.get("messages", ())) != LIMIT or not frame.get("has_more"):
                trouble["short_pages"] += 1
            if frame["id"] >= n_warm:
                hist.record(now - due)
        if all_sent[0] and not sched and not drained.done():
            drained.set_result(None)

    readers = [await open_peer(node.target, u, on_frame) for u in users]
    profiler: list[PySpy] = []

    def start() -> None:
        split.reset()
        if args.profile:
            profiler.append(PySpy(node.pid, args.duration, f"{args.name}_ws"))

    def send(i: int, due: float, now: float) -> None:
        sched[i] = due
        readers[i % len(readers)].send(json_frame({"op": "history", "id": i, "channel": channel, "limit": LIMIT}))

    await open_loop(args.rate, n_warm + int(args.rate * args.duration), send, mark=n_warm, on_mark=start)
    cpu = split.read()
    all_sent[0] = True
    if not sched:
        drained.set_result(None)
    await asyncio.wait([drained], timeout=10)
    await close_all(readers)
    out = window(hist, args.duration, cpu, unanswered=len(sched), **trouble)
    out["profile"] = await asyncio.get_running_loop().run_in_executor(None, profiler[0].summary) if profiler else None
    return out


async def http_phase(args: argparse.Namespace, node: Node, channel: str, user: str, split: CpuSplit) -> dict[str, Any]:
    target = node.target
    hist, trouble = Histogram(), {"short_pages": 0, "errors": 0}
    n_warm = int(args.http_rate * args.warmup)
    limits = httpx.Limits(max_connections=args.readers, max_keepalive_connections=args.readers)
    tasks: list[asyncio.Task[None]] = []
    async with httpx.AsyncClient(
        base_url=target.http_url, headers={"Authorization": f"Bearer {target.token(user)}"}, limits=limits, timeout=10
    ) as client:

        async def one(i: int, due: float) -> None:
            try:
                r = await client.get(f"/v1/channels/{channel}/messages", params={"limit": LIMIT})
                trouble["short_pages"] += r.status_code != 200 or len(r.json().get("messages", ())) != LIMIT
            except httpx.HTTPError:
                trouble["errors"] += 1
                return
            if i >= n_warm:
                hist.record(time.monotonic() - due)

        def send(i: int, due: float, now: float) -> None:
            tasks.append(asyncio.create_task(one(i, due)))

        await open_loop(args.http_rate, n_warm + int(args.http_rate * args.http_duration), send, mark=n_warm, on_mark=split.reset)
        cpu = split.read()
        await asyncio.wait(tasks, timeout=15)
    return window(hist, args.http_duration, cpu, **trouble)


async def store_phase(args: argparse.Namespace, keyspace: str, channel: int, split: CpuSplit) -> dict[str, Any]:
    from chat.app import build_store
    from chat.config import from_env

    with tempfile.TemporaryDirectory() as data_dir:
        store = build_store(from_env({**cluster.store_env(args, keyspace), "CHAT_DATA_DIR": data_dir, "CHAT_NODE_ID": "bench"}))
        await store.open()
        out: dict[str, Any] = {}
        try:
            await closed_loop(lambda i: store.history(channel, limit=LIMIT), 1, 0.5)  # connection, prepared statements
            for label, concurrency in (("serial", 1), (f"x{args.readers}", args.readers)):
                split.reset()
                run = await closed_loop(lambda i: store.history(channel, limit=LIMIT), concurrency, args.store_duration)
                out[label] = window(run.latency, run.elapsed_s, split.read(), concurrency=concurrency, errors=run.errors)
        finally:
            await store.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
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
    cluster.add_cluster_args(parser)
    add_node_args(parser, url=False)
    quick = {"messages": 200, "rate": 50.0, "duration": 2.0, "http_rate": 20.0, "http_duration": 2.0, "store_duration": 1.0, "warmup": 0.5}
    args = parse_args(parser, argv, name="history_read", quick=quick)
    pin_client(args)

    users = [f"hr-{k}" for k in range(args.readers)]
    services = cluster.Services(args)
    result: dict[str, Any] = {"params": vars(args), "services": services.facts(), "target_p99_ms": TARGET_P99_MS}
    with cluster.bench_keyspace(args, "hr") as keyspace:
        node = cluster.start_node(args, keyspace, 1, "hist")
        try:
            channel = node.target.create_channel(users[0], "group", "history bench", users[1:])
            result["fill"] = asyncio.run(fill(node, channel, users[0], args.messages, "y" * args.text_size))
            result["machine_busy_before_start"] = cluster.settle()
            split = services.split({"node": node.pid}, [os.getpid()])
            result["ws_history_op"] = asyncio.run(ws_phase(args, node, channel, users, split))
            result["cassandra_gc_pauses"] = services.gc_pauses(split.wall_start, split.wall_start + args.duration)
            cluster.settle()
            result["http_get"] = asyncio.run(http_phase(args, node, channel, users[0], split))
        finally:
            node.stop()
        if args.checkout.resolve() == ROOT:
            cluster.settle()
            store_split = services.split({}, [os.getpid()])
            result["store_history"] = asyncio.run(store_phase(args, keyspace, int(channel), store_split))
    ws, http, st = result["ws_history_op"], result["http_get"], result.get("store_history", {})
    ok = ws["short_pages"] == 0 and ws["unanswered"] == 0 and ws["errors"] == 0
    result["verdict"] = verdict(ws["latency"]["p99_ms"], TARGET_P99_MS, higher_is_better=False) if ok else "MISS (short or missing pages)"
    result["headline"] = headline(
        history_op_p99_ms=(ws["latency"]["p99_ms"], "lower"), http_get_p99_ms=(http["latency"]["p99_ms"], "lower")
    )
    store_text = "; ".join(
        f"store {k}: {v['reads_per_s']:.0f}/s, p50 {v['latency']['p50_ms']:.2f} / p99 {v['latency']['p99_ms']:.2f} ms"
        for k, v in st.items()
    )
    line = (
        f"latest {LIMIT} of {args.messages} messages, {args.readers} readers -> history op at {args.rate:.0f}/s: "
        f"p50 {ws['latency']['p50_ms']:.2f} ms, p99 {ws['latency']['p99_ms']:.2f} ms, max {ws['latency']['max_ms']:.1f} ms "
        f"({ws['short_pages']} short, {ws['errors']} errors; CPU cores: {cluster.cpu_line(ws['cpu_cores'])}); "
        f"HTTP GET at {args.http_rate:.0f}/s: p50 {http['latency']['p50_ms']:.2f} / p99 {http['latency']['p99_ms']:.2f} ms; "
        f"{store_text or 'store alone: skipped'}; {cluster.gc_line(result['cassandra_gc_pauses'])} (history-op window)"
    )
    report(args.name, result, line=line, target=f"p99 <= {TARGET_P99_MS:.0f} ms", checkout=args.checkout)
    if ws["profile"]:
        print_profile(ws["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
