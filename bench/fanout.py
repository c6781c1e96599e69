"""Fan-out: one room, 1,000 subscribed sockets, one or more publishing sockets; deliveries per
second actually received, stepping the offered rate up.

    .venv/bin/python -m bench.fanout [--sockets 1000] [--senders 4] [--rates 10,20,35,...] [--profile]
    .venv/bin/python -m bench.fanout --senders 1 --heartbeat-s 2.5 --server-cpus 0 --client-cpus 1

The receiving sockets live in ``--workers`` processes (``bench.harness.crowd``: an epoll client
by default, ``--client asyncio`` for comparison), spread over loopback source addresses past
~25k sockets. ``--senders`` sockets (not subscribed) in this process post to the room in turn on
a fixed schedule (open loop). One socket's frames are handled one after another by the node, so
``--senders 1`` is the harsher case: one publisher (a bot, one busy user) must be enough.
``--heartbeat-s`` makes every socket, publishers included, send ``heartbeat`` at that interval.

Each step lasts ``--step`` seconds of which the first ``--settle`` are not counted. Per step:
deliveries actually received in the window, delivery latency from the *scheduled* send time
(it includes the durable write before every fan-out), the publishers' send→ack latency, and
CPU of the node, its event-loop thread, the publishing process and the receiving workers (the
load generator must stay cheaper than the node, or the figure is the client's limit) and of
anything else on the machine. A step is sustained when >= 97 % of the offered deliveries
arrived, p99 <= ``--max-p99-ms`` and no socket got a ``resync``. The ramp stops at the first
failing step, after one bisection step; the result is the best sustained step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.harness.crowd import Crowd, spread_sources
from bench.harness.load import open_loop
from bench.harness.measure import CpuSplit, Histogram, headline, parse_args, report, us_per, verdict
from bench.harness.node import Target, add_node_args, node_from_args
from bench.harness.profile import PySpy, print_profile
from bench.harness.wire import HEARTBEAT, Peer, json_frame, open_peer
from bench.harness.workers import Job, read_stamp, stamp

TARGET_DELIVERIES = 50_000
QUICK = {"sockets": 200, "rates": "10,50", "step": 2.0, "settle": 0.5, "drain": 0.5, "bisect": False, "at": 2000.0}


class Publishers:
    """The sending sockets; acks echo the text ``"<step>:<due>:…"``, so latency is per step."""

    def __init__(self) -> None:
        self.acks: dict[int, Histogram] = {}
        self.errors: list[bytes] = []
        self.peers: list[Peer] = []

    def on_frame(self, payload: bytes, now: float) -> None:
        if payload.startswith(b'{"op":"ack"'):
            step, due = read_stamp(payload, payload.find(b'"text":"') + 8)
            self.acks.setdefault(step, Histogram()).record(now - due)
        elif payload.startswith(b'{"op":"error"'):
            self.errors.append(payload)

    async def heartbeat(self, interval_s: float) -> None:
        while interval_s > 0:
            await asyncio.sleep(interval_s)
            for p in self.peers:
                p.send(HEARTBEAT)


@dataclass
class Room:
    """What every step uses: the options, the room, its publishers and receivers, the meters."""

    args: argparse.Namespace
    channel: str
    pubs: Publishers
    crowd: Crowd
    split: CpuSplit
    node_pid: int | None


async def run_step(room: Room, k: int, rate: float, *, resyncs_before: int, profile: bool) -> dict[str, Any]:
    args, pubs, channel, node_pid = room.args, room.pubs, room.channel, room.node_pid
    pad = "x" * max(0, args.text_size - 24)
    window: list[float] = []
    profiler: list[PySpy] = []

    def start_window() -> None:
        window.append(time.monotonic())
        room.split.reset()
        if profile and node_pid:
            profiler.append(PySpy(node_pid, args.step - args.settle, f"{args.name}_{round(rate * args.sockets)}"))

    def send(i: int, due: float, now: float) -> None:
        pubs.peers[i % len(pubs.peers)].send(
            json_frame({"op": "send", "channel": channel, "text": stamp(k, due, pad), "client_msg_id": f"f{k}-{i}"})
        )

    await open_loop(rate, int(rate * args.step), send, mark=math.ceil(rate * args.settle), on_mark=start_window)
    cpu = room.split.read()
    lo, hi = window[0], window[0] + args.step - args.settle
    await asyncio.sleep(args.drain)  # in-flight frames land before the workers are asked
    got = await room.crowd.stats(k, lo, hi)
    received, offered = got["received"] / (hi - lo), rate * args.sockets
    lat = got["hist"].summary()
    loadgen = cpu["publisher"] + cpu["receivers"]
    return {
        "step": k,
        "msgs_per_s": rate,
        "offered_deliveries_per_s": round(offered),
        "received_deliveries_per_s": round(received),
        "latency": lat,
        "ack_latency": pubs.acks[k].summary() if k in pubs.acks else None,
        "cpu_cores": {**cpu, "loadgen": round(loadgen, 3)},
        "node_cpu_us_per_delivery": us_per(cpu.get("node"), received),
        "loadgen_cpu_us_per_delivery": us_per(loadgen, received),
        "resyncs_total": got["resyncs"],
        "errors_total": got["errors"] + len(pubs.errors),
        "closed_sockets": got["closed"],
        "heartbeat_acks_total": got["heartbeat_acks"],
        "sustained": received >= 0.97 * offered and lat["p99_ms"] <= args.max_p99_ms and got["resyncs"] == resyncs_before,
        "profile": await asyncio.get_running_loop().run_in_executor(None, profiler[0].summary) if profiler else None,
    }


def step_line(s: dict[str, Any], label: str) -> str:
    cpu, ack, lat = s["cpu_cores"], s["ack_latency"] or {}, s["latency"]
    return (
        f"  {label}: {s['msgs_per_s']:g} msg/s = {s['offered_deliveries_per_s']:,} offered -> "
        f"{s['received_deliveries_per_s']:,}/s received, p50 {lat['p50_ms']:.1f} / p99 {lat['p99_ms']:.1f} ms, "
        f"ack p99 {ack.get('p99_ms')} ms; "
        f"CPU: node {cpu.get('node')} ({s['node_cpu_us_per_delivery']} us/delivery), load generator {cpu['loadgen']} "
        f"(publisher {cpu['publisher']}, receivers {cpu['receivers']}), other {cpu['other']}; resyncs {s['resyncs_total']} -> "
        f"{'ok' if s['sustained'] else 'NOT sustained'}"
    )


async def ramp(args: argparse.Namespace, target: Target, node_pid: int | None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    users = [f"fan-{i}" for i in range(args.sockets)]
    senders = [f"fan-sender-{k}" for k in range(args.senders)]
    channel = await loop.run_in_executor(None, target.create_channel, senders[0], "room", "fanout bench", senders[1:] + users)
    jobs = [Job(target.ws_path_for(u), (channel,), src) for u, src in zip(users, spread_sources(len(users), args.sources), strict=True)]
    pubs = Publishers()
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    async with Crowd(
        target.host,
        target.port,
        jobs,
        workers=args.workers,
        kind=args.client,
        nap_s=args.client_nap_ms / 1000,
        heartbeat_s=args.heartbeat_s,
    ) as crowd:
        pubs.peers = [await open_peer(target, u, pubs.on_frame) for u in senders]
        beat = asyncio.create_task(pubs.heartbeat(args.heartbeat_s))
        split = CpuSplit({"node": [node_pid], "publisher": [os.getpid()], "receivers": crowd.pids}, main_thread_of=["node"])
        room = Room(args, channel, pubs, crowd, split, node_pid)
        rates = [float(r) for r in args.rates.split(",")]
        # Profile one level every variant sustains, so profiles of two runs compare.
        profiled = next((r for r in rates if r * args.sockets >= args.at), rates[-1])
        resyncs = 0
        failed_at: float | None = None
        for k, rate in enumerate(rates):
            s = await run_step(room, k, rate, resyncs_before=resyncs, profile=args.profile and rate == profiled)
            resyncs = s["resyncs_total"]
            steps.append(s)
            print(step_line(s, f"step {k}"), flush=True)
            if not s["sustained"]:
                failed_at = rate
                break
            best = s
            await asyncio.sleep(args.pause)
        if args.bisect and best and failed_at and best["msgs_per_s"] < (mid := round((best["msgs_per_s"] + failed_at) / 2)) < failed_at:
            await asyncio.sleep(args.pause * 3)  # let the failed step's backlog clear
            s = await run_step(room, len(steps), mid, resyncs_before=resyncs, profile=False)
            steps.append(s)
            print(step_line(s, "bisect"), flush=True)
            best = s if s["sustained"] else best
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        for p in pubs.peers:
            p.close()
        connect_s = crowd.connect_s
    return {"connect_s": round(connect_s, 2), "steps": steps, "best": best}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=1000, help="subscribed sockets in the room")
    parser.add_argument("--senders", type=int, default=4, help="publishing sockets, taking turns (1: one publisher)")
    parser.add_argument("--heartbeat-s", type=float, default=0.0, help="every socket sends `heartbeat` at this interval (0: none)")
    parser.add_argument("--workers", type=int, default=2, help="receiving client processes (more are used past 18,000 sockets each)")
    parser.add_argument(
        "--sources", type=int, default=1, help="loopback source addresses 127.0.0.1..N (more are used past 25,000 sockets each)"
    )
    parser.add_argument("--client", choices=["epoll", "asyncio"], default="epoll", help="receiving client flavour (epoll: the leanest)")
    parser.add_argument(
        "--client-nap-ms",
        type=float,
        default=1.0,
        help="epoll client: nap after a poll with few ready sockets, so one wake-up serves many (0: off)",
    )
    parser.add_argument("--rates", default="10,20,35,50,65,80,100,125,150,200,250,300", help="offered messages/s per step, comma-separated")
    parser.add_argument("--step", type=float, default=7.0, help="seconds per step")
    parser.add_argument("--settle", type=float, default=2.0, help="uncounted seconds at the start of a step")
    parser.add_argument("--drain", type=float, default=1.0, help="seconds after a step before counting")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between steps")
    parser.add_argument("--max-p99-ms", type=float, default=200.0, help="a step whose delivery p99 exceeds this is not sustained")
    parser.add_argument("--text-size", type=int, default=100)
    parser.add_argument("--no-bisect", dest="bisect", action="store_false")
    parser.add_argument(
        "--at", type=float, default=20_000, help="reference level: the first step offering this many deliveries/s is profiled and compared"
    )
    add_node_args(parser)
    args = parse_args(parser, argv, name="fanout", quick=QUICK)

    t0 = time.monotonic()
    with node_from_args(args, name="fanout") as (target, node):
        out = asyncio.run(ramp(args, target, node.pid if node else None))
    best = out["best"]
    ref = next((s for s in out["steps"] if s["offered_deliveries_per_s"] >= args.at), None) or {}
    value = best["received_deliveries_per_s"] if best else 0
    result = {
        "params": {k: v for k, v in vars(args).items() if k != "secret"},
        "max_sustained_deliveries_per_s": value,
        "at_msgs_per_s": best["msgs_per_s"] if best else None,
        "target_deliveries_per_s": TARGET_DELIVERIES,
        "verdict": verdict(value, TARGET_DELIVERIES, higher_is_better=True),
        "headline": headline(
            max_sustained_deliveries_per_s=(value, "higher"),
            delivery_p99_ms_at_ref=((ref.get("latency") or {}).get("p99_ms"), "lower"),
            ack_p99_ms_at_ref=((ref.get("ack_latency") or {}).get("p99_ms"), "lower"),
            node_us_per_delivery_at_ref=(ref.get("node_cpu_us_per_delivery"), "lower"),
        ),
        "wall_s": round(time.monotonic() - t0, 1),
        **out,
    }
    line = f"max sustained {value:,} deliveries/s to {args.sockets} sockets"
    if best:
        cpu = best["cpu_cores"]
        line += (
            f" ({best['msgs_per_s']:g} msg/s from {args.senders} publisher(s); p50 {best['latency']['p50_ms']:.1f} / "
            f"p99 {best['latency']['p99_ms']:.1f} ms, ack p99 {(best['ack_latency'] or {}).get('p99_ms')} ms; "
            f"node CPU {cpu.get('node')} cores, load generator {cpu['loadgen']} cores)"
        )
    report(args.name, result, line=line, target=f">= {TARGET_DELIVERIES:,}/s", checkout=args.checkout)
    for s in out["steps"]:
        if s["profile"]:
            print(f"  profile of the node at {s['offered_deliveries_per_s']:,} offered deliveries/s:")
            print_profile(s["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
