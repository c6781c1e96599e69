"""send→ack latency at a fixed offered rate on one node (open loop, no coordinated omission).

    .venv/bin/python -m bench.send_latency [--rate 500] [--duration 20] [--senders 10] [--profile]
    .venv/bin/python -m bench.send_latency --url ws://127.0.0.1:8000/v1/ws --secret "$CHAT_JWT_SECRET"

Starts ``chat serve`` in a subprocess with its own data dir on disk (SQLite, WAL,
``synchronous=FULL``: every group commit is fsynced) unless ``--url`` names a running node.
``--senders`` sockets and ``--subscribers`` sockets join one group channel and all subscribe
to it (so every message is also fanned out to 12 sockets by default). Sends follow a fixed
schedule: message *i* is due at ``t0 + i/rate`` and goes out on sender ``i % senders`` as soon
as the client loop reaches that time; latency is measured from the *scheduled* time to the
arrival of the ``ack`` (and, for the subscribers, of the ``message``), so a stalled server
cannot hide its stall by slowing the sender down. The first ``--warmup`` seconds are not
recorded. ``--profile`` samples the server with py-spy during the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

import orjson

from bench.common import (
    add_server_args,
    CpuMeter,
    Histogram,
    PySpy,
    SystemCpu,
    print_profile,
    target_from_args,
    verdict,
    write_result,
)
from bench.wsclient import RawWs, connect

TARGET_P99_MS = 10.0
_monotonic = time.monotonic


class Peer(RawWs):
    """A sender or subscriber socket; the benchmark object does the bookkeeping."""

    def __init__(self, bench: LatencyBench, role: str, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.bench = bench
        self.role = role
        self.subscribed = asyncio.get_running_loop().create_future()

    def on_text(self, payload: bytes, now: float) -> None:
        b = self.bench
        if payload.startswith(b'{"op":"ack"'):
            b.on_ack(orjson.loads(payload), now)
        elif payload.startswith(b'{"op":"message"'):
            if self.role == "sub":
                b.on_delivery(payload, now)
        elif payload.startswith(b'{"op":"subscribed"'):
            if not self.subscribed.done():
                self.subscribed.set_result(None)
        elif payload.startswith(b'{"op":"error"'):
            b.errors.append(orjson.loads(payload))
            if not self.subscribed.done():
                self.subscribed.set_exception(RuntimeError(payload.decode()))
        elif payload.startswith(b'{"op":"resync"'):
            b.resyncs += 1


class LatencyBench:
    def __init__(self, rate: float, warmup_s: float, duration_s: float) -> None:
        self.rate = rate
        self.n_warm = int(rate * warmup_s)
        self.n_total = self.n_warm + int(rate * duration_s)
        self.sched: list[float] = [0.0] * self.n_total
        self.acked = bytearray(self.n_total)
        self.ack = Histogram()
        self.delivery = Histogram()
        self.send_lag = Histogram()
        self.errors: list[dict] = []
        self.resyncs = 0
        self.n_acked = 0
        self.all_acked = asyncio.get_running_loop().create_future()

    def on_ack(self, frame: dict, now: float) -> None:
        i = frame.get("id")
        if not isinstance(i, int) or not 0 <= i < self.n_total or self.acked[i]:
            return
        self.acked[i] = 1
        self.n_acked += 1
        if i >= self.n_warm:
            self.ack.record(now - self.sched[i])
        if self.n_acked == self.n_total and not self.all_acked.done():
            self.all_acked.set_result(None)

    def on_delivery(self, payload: bytes, now: float) -> None:
        # client_msg_id is "m<i>": find it without decoding the whole frame.
        k = payload.rfind(b'"client_msg_id":"m')
        if k < 0:
            return
        end = payload.find(b'"', k + 18)
        i = int(payload[k + 18 : end])
        if self.n_warm <= i < self.n_total:
            self.delivery.record(now - self.sched[i])


def fsync_probe(directory: str | None, n: int = 200) -> dict[str, float]:
    """What one durable commit costs on this disk: write 4 KiB + fdatasync, ``n`` times."""
    lat = []
    with tempfile.NamedTemporaryFile(dir=directory) as f:
        fd = f.fileno()
        block = os.urandom(4096)
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    lat.sort()
    return {"fdatasync_p50_ms": round(lat[n // 2] * 1000, 3), "fdatasync_p99_ms": round(lat[int(n * 0.99) - 1] * 1000, 3), "fdatasync_max_ms": round(lat[-1] * 1000, 3)}


async def run(args: argparse.Namespace, target, server) -> dict:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    senders = [f"lat-s{i}" for i in range(args.senders)]
    subs = [f"lat-r{i}" for i in range(args.subscribers)]
    channel = await loop.run_in_executor(None, target.create_channel, senders[0], "group", "latency bench", senders[1:] + subs)
    bench = LatencyBench(args.rate, args.warmup, args.duration)
    peers: list[Peer] = []
    for role, users in (("send", senders), ("sub", subs)):
        for user in users:
            path = f"{target.ws_path}?token={target.token(user)}"
            peers.append(await connect(lambda r=role, p=path: Peer(bench, r, target.host, target.port, p), target.host, target.port))
    for p in peers:
        p.send_text(orjson.dumps({"op": "subscribe", "id": "sub", "channels": [channel]}))
    await asyncio.wait_for(asyncio.gather(*(p.subscribed for p in peers)), 15)
    send_peers = [p for p in peers if p.role == "send"]
    n_send = len(send_peers)
    text = ("x" * args.text_size)

    cpu = CpuMeter(server.pid) if server else None
    syscpu = SystemCpu()
    profiler = None
    cpu_measured = None
    sys_measured = None
    dumps = orjson.dumps

    t0 = _monotonic() + 0.2
    interval = 1.0 / args.rate
    i = 0
    measuring = False
    while i < bench.n_total:
        due = t0 + i * interval
        delay = due - _monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = _monotonic()
        if not measuring and i >= bench.n_warm:
            measuring = True
            if cpu:
                cpu.reset()
                if args.profile:
                    profiler = PySpy(server.pid, args.duration, "send_latency").start()
            syscpu.reset()
        while i < bench.n_total and t0 + i * interval <= now:
            due = t0 + i * interval
            bench.sched[i] = due
            peer = send_peers[i % n_send]
            peer.send_text(dumps({"op": "send", "id": i, "channel": channel, "text": text, "client_msg_id": f"m{i}"}))
            if i >= bench.n_warm:
                bench.send_lag.record(now - due)
            i += 1
    if cpu:
        cpu_measured = cpu.read()
    sys_measured = syscpu.read()
    try:
        await asyncio.wait_for(asyncio.shield(bench.all_acked), 10)
    except TimeoutError:
        pass
    await asyncio.sleep(0.3)  # last deliveries
    for p in peers:
        p.close()
    profile = None
    if profiler:
        await loop.run_in_executor(None, profiler.wait)
        profile = profiler.summary()
    return {
        "bench": bench,
        "server_cpu_cores": None if cpu_measured is None else round(cpu_measured, 3),
        "machine_busy_cores": round(sys_measured, 3),
        "profile": profile,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500.0, help="offered messages per second (total)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="unrecorded seconds first")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--subscribers", type=int, default=2)
    parser.add_argument("--text-size", type=int, default=100, help="characters per message")
    add_server_args(parser)
    parser.add_argument("--profile", action="store_true", help="py-spy the server during the measured window")
    parser.add_argument("--name", default="send_latency", help="results file name")
    args = parser.parse_args(argv)

    disk = fsync_probe(os.environ.get("BENCH_TMP") or None) if not args.url else {}
    with target_from_args(args, name="latency") as (target, server):
        out = asyncio.run(run(args, target, server))
    bench: LatencyBench = out.pop("bench")
    ack = bench.ack.summary()
    result = {
        "params": {k: v for k, v in vars(args).items() if k != "secret"},
        "store": "external (--url)" if args.url else "SQLite WAL synchronous=FULL on local ext4",
        "offered_msgs_per_s": args.rate,
        "achieved_acks_per_s": round(ack["count"] / args.duration, 1),
        "ack_latency": ack,
        "delivery_latency_to_subscribers": bench.delivery.summary(),
        "client_send_lag": bench.send_lag.summary(),
        "sent": bench.n_total,
        "acked": bench.n_acked,
        "errors": len(bench.errors),
        "error_samples": bench.errors[:5],
        "resyncs": bench.resyncs,
        "disk": disk,
        "target_p99_ms": TARGET_P99_MS,
        "verdict": verdict(ack["p99_ms"], TARGET_P99_MS, higher_is_better=False) if bench.n_acked == bench.n_total else "MISS (lost acks)",
        **out,
    }
    path = write_result(args.name, result)
    d = result["delivery_latency_to_subscribers"]
    print(
        f"send_latency: {args.rate:.0f} msg/s offered for {args.duration:.0f}s over {args.senders} senders -> "
        f"ack p50 {ack['p50_ms']:.2f} ms, p99 {ack['p99_ms']:.2f} ms, max {ack['max_ms']:.2f} ms "
        f"(delivery p50 {d['p50_ms']:.2f} / p99 {d['p99_ms']:.2f} ms; {bench.n_acked}/{bench.n_total} acked, {len(bench.errors)} errors; "
        f"server CPU {result['server_cpu_cores']} cores; disk fdatasync p50 {disk.get('fdatasync_p50_ms')} ms) "
        f"target p99 <= {TARGET_P99_MS:.0f} ms: {result['verdict']}  [bench/results/{path.name}]"
    )
    if result["profile"]:
        print_profile(result["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
