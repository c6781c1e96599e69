"""A hot room next to a quiet one on two nodes (Cassandra + Redis), hot-room protection on and off.

    .venv/bin/python -m bench.hot_room [--members 200] [--hot-rate 150] [--duration 10] [--modes on,off]
    .venv/bin/python -m bench.hot_room --micro      # the quiet room's send path, in process, with and without protection

Per mode: two fresh nodes (worker IDs 1, 2) whose dynamic settings (``config.json`` in their data
dirs) switch every protection on — or off: thresholds out of reach, so no room is ever hot. A room
with ``--members`` subscribed sockets (half on each node, in the harness's crowd workers) gets
``--hot-rate`` messages/s from ``--senders`` sockets spread over both nodes, while a quiet room
with one reader per node gets ``--quiet-rate`` from node 1; latency runs from the scheduled send
time (open loop). After ``--warmup`` seconds the window is measured: Cassandra's own write counts
for the ``messages`` and ``message_keys`` tables (``system_views.local_write_latency``: a
single-partition batch is one write; every message's idempotency claim is one LWT), delivery
p50/p99 of each room, refusals by code, and the CPU of both nodes, Cassandra, Redis and the load
generator. The quiet room's own writes are in the table counts (``--quiet-rate`` of them a second).

``--micro`` needs no services: ``MessageService.send`` to a quiet room with an in-memory store,
guard = none vs :class:`~chat.protect.guard.Protection`, and the hub's delivery of a quiet room's
message to 10 sockets with and without its fan-out policy — what protection costs a room that is
not hot.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

import orjson

from bench.harness import cluster
from bench.harness.crowd import Crowd
from bench.harness.measure import headline, parse_args, report
from bench.harness.node import add_node_args, pin_client
from bench.harness.wire import json_frame, open_peer
from bench.harness.workers import Job, stamp
from bench.hot_room_micro import micro

PROTECTED = {
    "hot_send_per_s": 40.0,
    "hot_room_send_per_s": 40.0,  # per node
    "hot_room_send_burst": 20,
    "batch_statements_per_s": 10.0,  # per node
    "coalesce_window_s": 0.05,
}
# Off: every threshold out of reach (no room is ever hot) and every switch off.
UNPROTECTED = {
    "hot_send_per_s": 1e6,
    "hot_fanout_per_s": 1e9,
    "hot_fetch_per_s": 1e6,
    "hot_join_per_s": 1e6,
    "hot_coalescing": False,
    "hot_batching": False,
    "hot_waiting_room": False,
    "hot_history_window": False,
    "hot_room_limits": False,
    "hot_suppress_ephemeral": False,
}
HOT, QUIET = 1, 2  # crowd steps: latency is kept per room
QUICK = {"duration": 4.0, "warmup": 1.0, "members": 40, "hot_rate": 80.0, "modes": "on"}


async def scenario(args: argparse.Namespace, nodes: list[Any], services: cluster.Services, keyspace: str) -> dict[str, Any]:
    a, b = (n.target for n in nodes)
    run = os.urandom(3).hex()
    members = [f"m{run}-{i}" for i in range(args.members)]
    hot = a.create_channel(f"own{run}", "room", "hot", members)
    quiet = a.create_channel(f"q{run}", "room", "quiet", [f"qa{run}", f"qb{run}"])
    jobs = [Job((a, b)[i % 2].ws_path_for(u), (hot,)) for i, u in enumerate(members)]
    jobs += [Job(t.ws_path_for(f"q{x}{run}"), (quiet,)) for t, x in ((a, "a"), (b, "b"))]
    answers: dict[str, int] = {}

    def on_frame(payload: bytes, now: float) -> None:
        if payload.startswith(b'{"op":"ack"'):
            answers["acked"] = answers.get("acked", 0) + 1
        elif payload.startswith(b'{"op":"error"'):
            code = orjson.loads(payload)["code"]
            answers[code] = answers.get(code, 0) + 1

    senders = [await open_peer((a, b)[i % 2], members[i], on_frame) for i in range(args.senders)]
    quiet_sender = await open_peer(a, f"q{run}", on_frame)
    session = await asyncio.to_thread(cluster.cql_session, args.cassandra_hosts)

    def writes() -> dict[str, int]:
        rows = session.execute("SELECT table_name, count FROM system_views.local_write_latency WHERE keyspace_name = %s", (keyspace,))
        return {r.table_name: r.count for r in rows if r.table_name in ("messages", "message_keys")}

    try:
        async with Crowd(a.host, a.port, jobs, workers=args.workers) as crowd:
            split = services.split({"node_1": nodes[0].pid, "node_2": nodes[1].pid}, [os.getpid(), *crowd.pids])
            total, t0 = args.warmup + args.duration, time.monotonic() + 0.05
            counts: dict[str, Any] = {}

            async def offer(peers: Sequence[Any], room: str, rate: float, step: int) -> None:
                for i in range(int(rate * total)):
                    due = t0 + i / rate
                    if (delay := due - time.monotonic()) > 0:
                        await asyncio.sleep(delay)
                    if i == int(rate * args.warmup) and step == HOT:
                        counts.update(before=await asyncio.to_thread(writes), at=time.monotonic(), answers=dict(answers))
                        split.reset()
                    key = f"{step}-{i}"
                    frame = {"op": "send", "id": key, "channel": room, "text": stamp(step, due, "x" * 40), "client_msg_id": key}
                    peers[i % len(peers)].send(json_frame(frame))

            await asyncio.gather(offer(senders, hot, args.hot_rate, HOT), offer([quiet_sender], quiet, args.quiet_rate, QUIET))
            cpu, span = split.read(), time.monotonic() - counts["at"]
            after = await asyncio.to_thread(writes)
            await asyncio.sleep(2)  # the last deliveries of the window land (open loop: nothing to await)
            lo, hi = counts["at"], counts["at"] + span
            hot_stats, quiet_stats = await crowd.stats(HOT, lo, hi), await crowd.stats(QUIET, lo, hi)
    finally:
        for peer in [*senders, quiet_sender]:
            peer.close()
        await asyncio.to_thread(session.cluster.shutdown)
    refused = {k: v - counts["answers"].get(k, 0) for k, v in answers.items() if k != "acked"}
    acked = answers.get("acked", 0) - counts["answers"].get("acked", 0)
    return {
        "cassandra_writes_per_s": {t: round((after[t] - counts["before"].get(t, 0)) / span, 1) for t in after},
        "acked_per_s": round(acked / span, 1),
        "refused_per_s": {k: round(v / span, 1) for k, v in refused.items() if v},
        "hot_delivery": hot_stats["hist"].summary(),
        "hot_resyncs": hot_stats["resyncs"],
        "quiet_delivery": quiet_stats["hist"].summary(),
        "cpu_cores": cpu,
    }


def run_mode(args: argparse.Namespace, keyspace: str, mode: str, services: cluster.Services) -> dict[str, Any]:
    settings = PROTECTED if mode == "on" else UNPROTECTED
    nodes = [cluster.start_node(args, keyspace, i, f"hot-{mode}-{i}", dynamic=settings) for i in (1, 2)]
    try:
        cluster.settle()
        return asyncio.run(scenario(args, nodes, services, keyspace))
    finally:
        for node in nodes:
            node.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=200, help="member sockets of the hot room, half on each node (default %(default)s)")
    parser.add_argument("--senders", type=int, default=10, help="sockets sending to the hot room (default %(default)s)")
    parser.add_argument("--hot-rate", type=float, default=150.0, help="messages/s offered to the hot room (default %(default)s)")
    parser.add_argument("--quiet-rate", type=float, default=10.0, help="messages/s in the quiet room (default %(default)s)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per mode (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before the window (detection happens here) (default %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="crowd worker processes (default %(default)s)")
    parser.add_argument("--modes", default="on,off", help="protection on, off, or both in this order (default %(default)s)")
    parser.add_argument("--micro", action="store_true", help="only the in-process cost for a quiet room (no services)")
    cluster.add_cluster_args(parser)
    add_node_args(parser, url=False)
    args = parse_args(parser, argv, name="hot_room", quick=QUICK)
    if args.micro:
        result = micro()
        line = ", ".join(f"{k} {v}" for k, v in result["us_per_op"].items())
        report(f"{args.name}_micro", {"params": vars(args), **result, "verdict": "n/a"}, line=line, target="quiet rooms do not slow down")
        return 0
    pin_client(args)
    services = cluster.Services(args)
    out: dict[str, Any] = {}
    with cluster.bench_keyspace(args, "hot") as keyspace:
        for mode in args.modes.split(","):
            out[mode] = run_mode(args, keyspace, mode, services)
    on, off = out.get("on", {}), out.get("off", {})
    line = "; ".join(
        f"{mode}: messages table {r['cassandra_writes_per_s'].get('messages')} writes/s, claims {r['cassandra_writes_per_s'].get('message_keys')}/s, "
        f"hot p50/p99 {r['hot_delivery']['p50_ms']:.0f}/{r['hot_delivery']['p99_ms']:.0f} ms, quiet p50/p99 "
        f"{r['quiet_delivery']['p50_ms']:.1f}/{r['quiet_delivery']['p99_ms']:.1f} ms, refused {r['refused_per_s']}/s, "
        f"nodes {r['cpu_cores'].get('node_1', 0) + r['cpu_cores'].get('node_2', 0):.2f} cores"
        for mode, r in out.items()
    )
    result = {
        "params": vars(args),
        "settings": {"on": PROTECTED, "off": UNPROTECTED},
        "services": services.facts(),
        **out,
        "verdict": "n/a",
        "headline": headline(
            quiet_p99_ms_on=(on.get("quiet_delivery", {}).get("p99_ms"), "lower"),
            quiet_p99_ms_off=(off.get("quiet_delivery", {}).get("p99_ms"), "lower"),
        ),
    }
    report(args.name, result, line=line, target="quiet room unharmed, hot room's storage bounded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
