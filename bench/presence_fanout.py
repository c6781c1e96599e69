"""Presence transitions across nodes: a user comes and goes on node 1, watchers see it on node 2.

    .venv/bin/python -m bench.presence_fanout [--pairs 50] [--rounds 10]

Starts two nodes on the shared Cassandra (a fresh keyspace) and Redis. ``--pairs`` DMs, each
with a watcher socket on node 2 subscribed to it. Each round, every pair's other user opens a
socket on node 1 and, once the watcher saw it online, closes it cleanly; latency runs from the
moment the socket's ``hello`` arrived (online) or its close was sent (offline) to the watcher's
``presence`` frame on node 2 — the node's batched presence write, the transition's publish on
the relay, and the other node's fan-out. Target: p99 ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from typing import Any

import orjson

from bench.harness import cluster
from bench.harness.measure import Histogram, headline, parse_args, report, verdict
from bench.harness.node import add_node_args, pin_client
from bench.harness.wire import Peer, close_all, open_peer

TARGET_P99_MS = 50.0


async def measure(args: argparse.Namespace, node1: Any, node2: Any) -> dict[str, Any]:
    t1, t2 = node1.target, node2.target
    loop = asyncio.get_running_loop()
    pairs = []
    for i in range(args.pairs):
        watcher_user, user = f"w{i}", f"p{i}"
        dm = await loop.run_in_executor(None, lambda w=watcher_user, u=user: t1.http(w).post("/v1/dms", json={"user": u}).json()["channel"]["id"])
        pairs.append((watcher_user, user, dm))
    waiting: dict[tuple[str, str], asyncio.Future[float]] = {}

    def on_frame(payload: bytes, now: float) -> None:
        if payload.startswith(b'{"op":"presence"'):
            frame = orjson.loads(payload)
            fut = waiting.pop((frame.get("user", ""), frame.get("status", "")), None)
            if fut is not None and not fut.done():
                fut.set_result(now)

    watchers: list[Peer] = [await open_peer(t2, w, on_frame, channels=[dm]) for w, _, dm in pairs]
    online, offline = Histogram(), Histogram()
    for _ in range(args.rounds):
        ups = {user: loop.create_future() for _, user, _ in pairs}
        for user, fut in ups.items():
            waiting[(user, "online")] = fut

        async def up(user: str, seen: asyncio.Future[float]) -> Peer:
            peer = await open_peer(t1, user)
            hello_at = time.monotonic()  # the device is online from here
            online.record(max(0.0, await asyncio.wait_for(seen, 10) - hello_at))
            return peer

        peers = await asyncio.gather(*(up(user, ups[user]) for _, user, _ in pairs))
        downs = {user: loop.create_future() for _, user, _ in pairs}
        for user, fut in downs.items():
            waiting[(user, "offline")] = fut
        closed_at = time.monotonic()
        await close_all(list(peers))
        for fut in downs.values():
            offline.record(await asyncio.wait_for(fut, 10) - closed_at)
    await close_all(watchers)
    both = Histogram()
    both.merge(online)
    both.merge(offline)
    return {"online": online.summary(), "offline": offline.summary(), "all": both.summary()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    cluster.add_cluster_args(parser)
    add_node_args(parser, url=False)
    args = parse_args(parser, argv, name="presence_fanout", quick={"pairs": 10, "rounds": 2})
    pin_client(args)
    with cluster.bench_keyspace(args, "presence") as keyspace:
        node1 = cluster.start_node(args, keyspace, 1, "presence1")
        node2 = cluster.start_node(args, keyspace, 2, "presence2")
        try:
            result = asyncio.run(measure(args, node1, node2))
        finally:
            node1.stop()
            node2.stop()
    p99 = result["all"].get("p99_ms")
    result["verdict"] = verdict(p99, TARGET_P99_MS, higher_is_better=False)
    result["headline"] = headline(transition_p99_ms=(p99, "lower"))
    line = (
        f"transition to a watcher on another node: online p50 {result['online']['p50_ms']} / p99 {result['online']['p99_ms']} ms, "
        f"offline p50 {result['offline']['p50_ms']} / p99 {result['offline']['p99_ms']} ms ({args.pairs} pairs x {args.rounds} rounds)"
    )
    report(args.name, result, line=line, target=f"p99 <= {TARGET_P99_MS} ms", checkout=args.checkout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
