"""Fan-out: one room, 1,000 subscribed sockets, a few senders; deliveries per second actually received.

    .venv/bin/python -m bench.fanout [--sockets 1000] [--workers 2] [--rates 10,25,50,...] [--profile]

The 1,000 receiving sockets are spread over ``--workers`` processes (each its own asyncio
loop and the lean client of ``bench.wsclient``; ``--sources`` spreads them over loopback
source addresses). ``--senders`` sockets (default 4, not subscribed) in the main process post
to the room in turn on a fixed schedule (open loop), stepping the offered rate up (one socket's
frames are handled one after another, so a single sender would cap the rate at one message
per fan-out time): each step lasts ``--step`` seconds, of which the
first ``--settle`` are not counted. Per step we count the frames the workers actually
received in the window (deliveries/s), the delivery latency from the *scheduled* send time
to receipt (p50/p99; it includes the durable store write that precedes every fan-out), the
server's CPU and the clients' CPU. A step is sustained when ≥ 97 % of the offered
deliveries arrived in the window, p99 ≤ ``--max-p99-ms`` (200 ms: one message is written
to 1,000 sockets one after another, so even an idle node shows tens of ms at p99) and no socket got a ``resync``
(outbox overflow). The ramp stops at the first failing step (after one bisection step
between the last pass and the failure); the result is the best sustained step.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing as mp
import os
import select
import socket
import struct
import time
from multiprocessing.connection import Connection
from typing import Any

import orjson

from bench.common import CpuMeter, add_server_args, Histogram, PySpy, SystemCpu, Target, print_profile, target_from_args, verdict, write_result
from bench.wsclient import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawWs, connect, encode_frame, frame_at

TARGET_DELIVERIES = 50_000
DEFAULT_RATES = "10,20,35,50,65,80,100,125,150,200,250,300"
_monotonic = time.monotonic
# Below glibc's 128 KiB mmap threshold: ``recv(262144)`` (asyncio's default read size) makes
# every read an mmap + page fault + munmap, ~10 us instead of ~1.3 us on this machine.
RECV_SIZE = 65536


# Worker processes: receive, count, measure


class FanClient(RawWs):
    def __init__(self, w: Worker, *args: Any) -> None:
        super().__init__(*args)
        self.w = w
        self.subscribed = asyncio.get_running_loop().create_future()

    def on_text(self, payload: bytes, now: float) -> None:
        if payload.startswith(b'{"op":"message"'):
            w = self.w
            k = payload.find(b'"text":"', 40) + 8
            a = payload.find(b":", k)
            b = payload.find(b":", a + 1)
            step = int(payload[k:a])
            hist = w.hists.get(step)
            if hist is None:
                hist = w.hists[step] = Histogram()
            hist.record(now - float(payload[a + 1 : b]))
            key = int(now * 1000)
            bins = w.bins
            bins[key] = bins.get(key, 0) + 1
        elif payload.startswith(b'{"op":"subscribed"'):
            if not self.subscribed.done():
                self.subscribed.set_result(None)
        elif payload.startswith(b'{"op":"resync"'):
            self.w.resyncs += 1
        elif payload.startswith(b'{"op":"error"'):
            self.w.errors += 1
            if not self.subscribed.done():
                self.subscribed.set_exception(RuntimeError(payload.decode()))

    def on_close(self) -> None:
        self.w.closed += 1


class Worker:
    def __init__(self) -> None:
        self.hists: dict[int, Histogram] = {}
        self.bins: dict[int, int] = {}
        self.resyncs = 0
        self.errors = 0
        self.closed = 0


def worker_main(conn: Connection, host: str, port: int, path: str, tokens: list[str], channel: str, source: str | None, kind: str = "epoll", nap_s: float = 0.001) -> None:
    if kind == "asyncio":
        asyncio.run(_worker(conn, host, port, path, tokens, channel, source))
    else:
        EpollWorker(conn, host, port, path, tokens, channel, source, nap_s).run()


def _worker_stats(w: Any, cmd: tuple) -> dict[str, Any]:
    _, step, lo, hi = cmd
    received = sum(c for k, c in w.bins.items() if lo * 1000 <= k < hi * 1000)
    hist = w.hists.get(step)
    return {"received": received, "hist": hist.to_dict() if hist else None, "resyncs": w.resyncs, "errors": w.errors, "closed": w.closed}


async def _worker(conn: Connection, host: str, port: int, path: str, tokens: list[str], channel: str, source: str | None) -> None:
    """The asyncio flavour (``--client asyncio``): one ``RawWs`` protocol per socket."""
    loop = asyncio.get_running_loop()
    w = Worker()
    sem = asyncio.Semaphore(64)
    sub = orjson.dumps({"op": "subscribe", "id": 1, "channels": [channel]})

    async def open_one(token: str) -> FanClient:
        async with sem:
            c = await connect(lambda: FanClient(w, host, port, f"{path}?token={token}"), host, port, source=source)
            c.send_text(sub)
            await asyncio.wait_for(asyncio.shield(c.subscribed), 30)
            return c

    try:
        clients = await asyncio.gather(*(open_one(t) for t in tokens))
    except Exception as exc:  # noqa: BLE001
        conn.send(("failed", repr(exc)))
        return
    conn.send(("ready", len(clients)))
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: inbox.put_nowait(conn.recv()))
    while True:
        cmd = await inbox.get()
        op = cmd[0]
        if op == "cpu":
            conn.send(time.process_time())
        elif op == "stats":
            conn.send(_worker_stats(w, cmd))
        elif op == "stop":
            loop.remove_reader(conn.fileno())
            for c in clients:
                c.close()
            await asyncio.sleep(0.2)
            conn.send("stopped")
            return


class EpollWorker(Worker):
    """The default flavour: no asyncio on the receive path.

    Sockets are opened and upgraded one by one (blocking, a millisecond each on loopback),
    then all are read from one ``epoll`` loop: per ready socket one ``recv`` and one pass over
    the frames it returned. Under load this costs about half of the asyncio flavour's CPU per
    frame (no transport/handle/callback layers), so the clients stay cheaper than the server.
    """

    def __init__(self, conn: Connection, host: str, port: int, path: str, tokens: list[str], channel: str, source: str | None, nap_s: float = 0.001) -> None:
        super().__init__()
        self.nap_s = nap_s
        self.conn = conn
        self.host, self.port, self.path = host, port, path
        self.tokens = tokens
        self.channel = channel
        self.source = source
        self.socks: dict[int, socket.socket] = {}
        self.bufs: dict[int, bytes] = {}
        self.subscribed: set[int] = set()

    def _open(self, token: str) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=15, source_address=(self.source, 0) if self.source else None)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            (f"GET {self.path}?token={token} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
        s.sendall(encode_frame(OP_TEXT, orjson.dumps({"op": "subscribe", "id": 1, "channels": [self.channel]})))
        s.setblocking(False)
        self.bufs[s.fileno()] = rest
        return s

    def run(self) -> None:
        try:
            for token in self.tokens:
                s = self._open(token)
                self.socks[s.fileno()] = s
            ep = select.epoll(len(self.socks) + 8)
            for fd in self.socks:
                ep.register(fd, select.EPOLLIN)
            ctl = self.conn.fileno()
            ep.register(ctl, select.EPOLLIN)
            for fd in list(self.bufs):
                if self.bufs[fd]:
                    data, self.bufs[fd] = self.bufs[fd], b""
                    self._frames(fd, data)
            deadline = time.monotonic() + 30
            while len(self.subscribed) < len(self.socks):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(self.subscribed)}/{len(self.socks)} subscribed")
                for fd, _ in ep.poll(1.0):
                    if fd != ctl:
                        self._readable(fd)
        except Exception as exc:  # noqa: BLE001
            self.conn.send(("failed", repr(exc)))
            return
        self.conn.send(("ready", len(self.socks)))
        readable = self._readable
        poll = ep.poll
        nap = self.nap_s
        sleep = time.sleep
        while True:
            events = poll(1.0)
            for fd, _ in events:
                if fd != ctl:
                    readable(fd)
                    continue
                cmd = self.conn.recv()
                if cmd[0] == "cpu":
                    self.conn.send(time.process_time())
                elif cmd[0] == "stats":
                    self.conn.send(_worker_stats(self, cmd))
                elif cmd[0] == "stop":
                    for s in self.socks.values():
                        with contextlib.suppress(OSError):
                            s.send(encode_frame(OP_CLOSE, struct.pack("!H", 1000)))
                            s.close()
                    self.conn.send("stopped")
                    return
            if nap and len(events) < 64:
                # Let frames pile up for a moment: one wake-up then serves many sockets.
                sleep(nap)

    def _readable(self, fd: int) -> None:
        try:
            data = self.socks[fd].recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.closed += 1
            self.socks[fd].close()
            return
        buf = self.bufs[fd]
        if buf:
            data = buf + data
        self._frames(fd, data)

    def _frames(self, fd: int, data: bytes) -> None:
        now = _monotonic()
        n = len(data)
        pos = 0
        hists = self.hists
        bins = self.bins
        while (frame := frame_at(data, pos, n)) is not None:
            b0, start, end = frame
            pos = end
            opcode = b0 & 0x0F
            if opcode == OP_TEXT:
                if data.startswith(b'{"op":"message"', start):
                    k = data.find(b'"text":"', start + 40) + 8
                    a = data.find(b":", k)
                    b = data.find(b":", a + 1)
                    step = int(data[k:a])
                    hist = hists.get(step)
                    if hist is None:
                        hist = hists[step] = Histogram()
                    hist.record(now - float(data[a + 1 : b]))
                    key = int(now * 1000)
                    bins[key] = bins.get(key, 0) + 1
                elif data.startswith(b'{"op":"subscribed"', start):
                    self.subscribed.add(fd)
                elif data.startswith(b'{"op":"resync"', start):
                    self.resyncs += 1
                elif data.startswith(b'{"op":"error"', start):
                    self.errors += 1
            elif opcode == OP_PING:
                with contextlib.suppress(OSError):
                    self.socks[fd].send(encode_frame(OP_PONG, data[start:end]))
            elif opcode == OP_CLOSE:
                self.closed += 1
        self.bufs[fd] = data[pos:] if pos < n else b""


# Main process: sender, ramp, verdicts


class Sender(RawWs):
    def __init__(self, ack_hists: dict[int, Histogram], errors: list[bytes], *args: Any) -> None:
        super().__init__(*args)
        self.acks = 0
        self.errors = errors
        self.ack_hists = ack_hists

    def on_text(self, payload: bytes, now: float) -> None:
        if payload.startswith(b'{"op":"ack"'):
            self.acks += 1
            # send→ack latency of the sender in the big room (the ack echoes the text: "step:due:…").
            k = payload.find(b'"text":"') + 8
            a = payload.find(b":", k)
            b = payload.find(b":", a + 1)
            step = int(payload[k:a])
            hist = self.ack_hists.get(step)
            if hist is None:
                hist = self.ack_hists[step] = Histogram()
            hist.record(now - float(payload[a + 1 : b]))
        elif payload.startswith(b'{"op":"error"'):
            self.errors.append(payload)


class Pool:
    """The worker processes, asked in parallel."""

    def __init__(self, conns: list[Connection]) -> None:
        self.conns = conns

    async def ask(self, cmd: tuple) -> list[Any]:
        loop = asyncio.get_running_loop()
        for c in self.conns:
            c.send(cmd)
        return list(await asyncio.gather(*(loop.run_in_executor(None, c.recv) for c in self.conns)))


async def run_step(step: int, rate: float, args: argparse.Namespace, senders: list[Sender], channel: str, pool: Pool, target: Target, server_pid: int | None, profile: bool) -> dict[str, Any]:
    n = int(rate * args.step)
    interval = 1.0 / rate
    pad = "x" * max(0, args.text_size - 24)
    t0 = _monotonic() + 0.05
    win_lo, win_hi = t0 + args.settle, t0 + args.step
    cpu = CpuMeter(server_pid) if server_pid else None
    me = CpuMeter(os.getpid())
    syscpu = SystemCpu()
    cpu_server = None
    client_cpu0: list[float] = []
    profiler = None
    i = 0
    measuring = False
    dumps = orjson.dumps
    while i < n:
        due = t0 + i * interval
        delay = due - _monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = _monotonic()
        if not measuring and now >= win_lo:
            measuring = True
            if cpu:
                cpu.reset()
            me.reset()
            syscpu.reset()
            client_cpu0 = await pool.ask(("cpu",))
            if profile and server_pid:
                profiler = PySpy(server_pid, args.step - args.settle, f"{args.name}_{int(rate * args.sockets)}").start()
        while i < n and t0 + i * interval <= now:
            due = t0 + i * interval
            senders[i % len(senders)].send_text(dumps({"op": "send", "channel": channel, "text": f"{step}:{due:.6f}:{pad}", "client_msg_id": f"f{step}-{i}"}))
            i += 1
    # The window ends with the last scheduled send; give in-flight frames time to land before asking.
    elapsed_window = max(1e-9, _monotonic() - win_lo)
    if cpu:
        cpu_server = cpu.read()
    busy = syscpu.read()
    sender_cpu = me.read()
    sender = senders[0]  # the ack histograms and error list are shared by all senders
    client_cpu1 = await pool.ask(("cpu",))
    await asyncio.sleep(args.drain)
    stats = await pool.ask(("stats", step, win_lo, win_hi))
    if profiler:
        await asyncio.get_running_loop().run_in_executor(None, profiler.wait)
    hist = Histogram()
    for s in stats:
        if s["hist"]:
            hist.merge(s["hist"])
    received = sum(s["received"] for s in stats)
    window = win_hi - win_lo
    offered = rate * args.sockets
    lat = hist.summary()
    got = received / window
    resyncs = sum(s["resyncs"] for s in stats)
    clients_cpu = sum(b - a for a, b in zip(client_cpu0, client_cpu1)) / elapsed_window
    ok = got >= 0.97 * offered and lat["p99_ms"] <= args.max_p99_ms and resyncs == 0
    return {
        "step": step,
        "msgs_per_s": rate,
        "offered_deliveries_per_s": round(offered),
        "received_deliveries_per_s": round(got),
        "delivered_fraction_of_expected": round(hist.count / max(1, n * args.sockets), 4),
        "latency": lat,
        "server_cpu_cores": None if cpu_server is None else round(cpu_server, 3),
        "server_cpu_us_per_delivery": None if cpu_server is None or not got else round(cpu_server / got * 1e6, 2),
        "clients_cpu_cores": round(clients_cpu, 3),
        "sender_process_cpu_cores": round(sender_cpu, 3),
        "machine_busy_cores": round(busy, 3),
        "other_load_cores": round(busy - (cpu_server or 0) - clients_cpu - sender_cpu, 3),
        "sender_ack_latency": sender.ack_hists[step].summary() if step in sender.ack_hists else None,
        "resyncs_total": resyncs,
        "errors_total": sum(s["errors"] for s in stats) + len(sender.errors),
        "closed_sockets": sum(s["closed"] for s in stats),
        "sustained": ok,
        "profile": profiler.summary() if profiler else None,
    }


async def main_async(args: argparse.Namespace, target: Target, server_pid: int | None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    users = [f"fan-{i}" for i in range(args.sockets)]
    sender_users = [f"fan-sender-{k}" for k in range(args.senders)]
    channel = await loop.run_in_executor(None, target.create_channel, sender_users[0], "room", "fanout bench", sender_users[1:] + users)
    ctx = mp.get_context("spawn")
    procs, conns = [], []
    per = (args.sockets + args.workers - 1) // args.workers
    sources = [f"127.0.0.{1 + k}" for k in range(args.sources)] if args.sources > 1 else [None]
    for k in range(args.workers):
        tokens = [target.token(u) for u in users[k * per : (k + 1) * per]]
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker_main, args=(child, target.host, target.port, target.ws_path, tokens, channel, sources[k % len(sources)], args.client, args.client_nap_ms / 1000), daemon=True)
        p.start()
        procs.append(p)
        conns.append(parent)
    pool = Pool(conns)
    steps: list[dict[str, Any]] = []
    try:
        t_connect = time.monotonic()
        ready = await asyncio.gather(*(loop.run_in_executor(None, c.recv) for c in conns))
        for r in ready:
            if r[0] != "ready":
                raise RuntimeError(f"worker failed: {r}")
        connect_s = time.monotonic() - t_connect
        ack_hists: dict[int, Histogram] = {}
        send_errors: list[bytes] = []
        senders = [
            await connect(lambda u=u: Sender(ack_hists, send_errors, target.host, target.port, f"{target.ws_path}?token={target.token(u)}"), target.host, target.port)
            for u in sender_users
        ]
        rates = [float(r) for r in args.rates.split(",")]
        profile_rate = next((r for r in rates if r * args.sockets >= args.profile_at), rates[-1])
        best = None
        last_fail = None
        for k, rate in enumerate(rates):
            res = await run_step(k, rate, args, senders, channel, pool, target, server_pid, args.profile and rate == profile_rate)
            steps.append(res)
            print(
                f"  step {k}: {rate:g} msg/s x {args.sockets} = {res['offered_deliveries_per_s']:,} offered -> "
                f"{res['received_deliveries_per_s']:,}/s received, p50 {res['latency']['p50_ms']:.1f} ms p99 {res['latency']['p99_ms']:.1f} ms, "
                f"CPU: server {res['server_cpu_cores']} ({res['server_cpu_us_per_delivery']} us/delivery), clients {res['clients_cpu_cores']}, other {res['other_load_cores']}, "
                f"ack p99 {(res['sender_ack_latency'] or {}).get('p99_ms')} ms, resyncs {res['resyncs_total']} -> {'ok' if res['sustained'] else 'NOT sustained'}",
                flush=True,
            )
            if res["sustained"]:
                best = res
            else:
                last_fail = rate
                break
            await asyncio.sleep(args.pause)
        if best is not None and last_fail is not None and args.bisect:
            mid = round((best["msgs_per_s"] + last_fail) / 2)
            if best["msgs_per_s"] < mid < last_fail:
                await asyncio.sleep(args.pause * 3)  # let the failed step's backlog clear
                res = await run_step(len(steps), mid, args, senders, channel, pool, target, server_pid, False)
                steps.append(res)
                print(
                    f"  bisect: {mid:g} msg/s -> {res['received_deliveries_per_s']:,}/s, p99 {res['latency']['p99_ms']:.1f} ms -> "
                    f"{'ok' if res['sustained'] else 'NOT sustained'}",
                    flush=True,
                )
                if res["sustained"]:
                    best = res
        for sender in senders:
            sender.close()
    finally:
        try:
            await asyncio.wait_for(pool.ask(("stop",)), 10)
        except Exception:  # noqa: BLE001
            pass
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    return {"connect_s": round(connect_s, 2), "steps": steps, "best": best}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--senders", type=int, default=4, help="sending sockets (taking turns)")
    parser.add_argument("--sources", type=int, default=1, help="loopback source addresses (127.0.0.1..N)")
    parser.add_argument("--client", choices=["epoll", "asyncio"], default="epoll", help="receiving client flavour (epoll: leanest)")
    parser.add_argument(
        "--client-nap-ms", type=float, default=1.0,
        help="epoll client: sleep this long after a poll that found few sockets ready, so one wake-up serves many (adds <= this to latency; 0 = off)",
    )
    parser.add_argument("--rates", default=DEFAULT_RATES, help="offered messages/s per step, comma-separated")
    parser.add_argument("--step", type=float, default=7.0, help="seconds per step")
    parser.add_argument("--settle", type=float, default=2.0, help="uncounted seconds at the start of a step")
    parser.add_argument("--drain", type=float, default=1.0, help="seconds after a step before counting")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between steps")
    parser.add_argument("--max-p99-ms", type=float, default=200.0, help="a step whose delivery p99 exceeds this is not sustained")
    parser.add_argument("--text-size", type=int, default=100)
    parser.add_argument("--no-bisect", dest="bisect", action="store_false")
    add_server_args(parser)
    parser.add_argument("--profile", action="store_true", help="py-spy the server during one step (see --profile-at)")
    parser.add_argument("--profile-at", type=float, default=20_000, help="profile the first step offering at least this many deliveries/s (a level every variant sustains, so profiles compare)")
    parser.add_argument("--name", default="fanout")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    with target_from_args(args, name="fanout") as (target, server):
        out = asyncio.run(main_async(args, target, server.pid if server else None))
    best = out["best"]
    value = best["received_deliveries_per_s"] if best else 0
    result = {
        "params": {k: v for k, v in vars(args).items() if k != "secret"},
        "max_sustained_deliveries_per_s": value,
        "at_msgs_per_s": best["msgs_per_s"] if best else None,
        "latency_at_max": best["latency"] if best else None,
        "server_cpu_at_max": best["server_cpu_cores"] if best else None,
        "clients_cpu_at_max": best["clients_cpu_cores"] if best else None,
        "target_deliveries_per_s": TARGET_DELIVERIES,
        "verdict": verdict(value, TARGET_DELIVERIES, higher_is_better=True),
        "wall_s": round(time.monotonic() - t0, 1),
        **out,
    }
    path = write_result(args.name, result)
    print(
        f"fanout: max sustained {value:,} deliveries/s to {args.sockets} sockets"
        + (f" ({best['msgs_per_s']:g} msg/s; p50 {best['latency']['p50_ms']:.1f} ms, p99 {best['latency']['p99_ms']:.1f} ms; "
           f"server CPU {best['server_cpu_cores']} cores, clients CPU {best['clients_cpu_cores']} cores over {args.workers} processes)" if best else "")
        + f" target >= {TARGET_DELIVERIES:,}/s: {result['verdict']}  [bench/results/{path.name}]"
    )
    for s in out["steps"]:
        if s["profile"]:
            print(f"  profile of the server at {s['offered_deliveries_per_s']:,} offered deliveries/s:")
            print_profile(s["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
