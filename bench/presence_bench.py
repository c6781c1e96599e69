"""Presence: heartbeats absorbed per second by one node's tracker→Redis path, and query latency.

    .venv/bin/python -m bench.presence_bench [--rate 30000] [--duration 6] [--query-s 3]

Runs in this process against real Redis (``CHAT_REDIS_URL`` or redis://127.0.0.1:6379) under a
prefix of its own, deleted afterwards. About 10 s plus setup.

**Heartbeats.** One :class:`PresenceTracker` on a :class:`RedisPresenceStore`, as a node runs
it (flush every 0.5 s). ``--devices`` sockets (default: ``--rate`` × 1 s, so every device beats
about once a second and a 0.5 s flush never folds two beats of one device into one) first say
hello, then heartbeat round-robin on an open-loop schedule of ``--rate`` per second for
``--duration`` s. *Absorbed* = heartbeat events the tracker wrote to Redis per second (counted
from the store calls that succeeded), with the backlog left at the end (in seconds of offered
load: about one flush interval when the path keeps up, growing when it does not), the round trips per
second, the time each flush took, and the *capacity*: events written per second of flush time
(what the path would take with the flusher never idle). Meanwhile a querier asks for 1,000 users
20 times a second (query latency under load) and a 10 ms timer measures how long the event
loop stalls (the flush builds its batch on the loop every socket of the node shares).

**Query.** Then, with nothing else running, ``tracker.query`` of 1,000 users (a third online,
a third offline after a clean close, a third never seen), one after another for ``--query-s``.

The machine is shared: its busy cores during the run are reported (``machine.loadavg_1m``, and
``busy_cores`` from /proc/stat), as is Redis's own CPU (which includes other clients' work).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from bench.harness.measure import CpuSplit, Histogram, verdict, write_result
from presence.state import DeviceEvent, Transition
from presence.store.redis import RedisPresenceStore
from presence.tracker import PresenceTracker

TARGET_HEARTBEATS_PER_S = 20_000.0
TARGET_QUERY_P99_MS = 10.0
QUERY_USERS = 1000


class TimedStore(RedisPresenceStore):
    """The Redis store, timing each successful batch write (one round trip each)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flush_times = Histogram()
        self.busy_s = 0.0

    async def apply(self, events: Sequence[DeviceEvent]) -> list[Transition]:
        started = time.perf_counter()
        out = await super().apply(events)
        took = time.perf_counter() - started
        self.flush_times.record(took)
        self.busy_s += took
        return out


async def redis_cpu_s(admin: Redis) -> float:
    info = await admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def heartbeat_phase(
    tracker: PresenceTracker, store: TimedStore, admin: Redis, devices: list[tuple[str, str]], *, rate: float, duration: float
) -> dict[str, Any]:
    query_users = [user for user, _ in devices[:QUERY_USERS]]
    under_load = Histogram()
    loop_lag = Histogram()
    stop = asyncio.Event()

    async def lag_probe() -> None:
        # How late a 10 ms timer fires: how long the loop (every socket of the node) was stalled.
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            loop_lag.record(time.perf_counter() - started - 0.01)

    async def querier() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await tracker.query(query_users)
            under_load.record(time.perf_counter() - started)
            await asyncio.sleep(0.05)  # an offered rate of ~20 queries/s, not a wait for an event

    before = tracker.stats()
    redis_before = await redis_cpu_s(admin)
    system, cpu0 = CpuSplit({}), time.process_time()
    loop = asyncio.get_running_loop()
    helpers = [asyncio.create_task(querier()), asyncio.create_task(lag_probe())]
    t0 = loop.time()
    sent, n = 0, len(devices)
    while (now := loop.time()) < t0 + duration:
        due = int((now - t0) * rate)
        while sent < due:
            user, device = devices[sent % n]
            tracker.heartbeat(user, device)
            sent += 1
        await asyncio.sleep(0.005)  # the load generator's tick
    elapsed = loop.time() - t0
    stop.set()
    await asyncio.gather(*helpers)
    after = tracker.stats()
    written = after.written - before.written
    flushes = after.flushes - before.flushes
    return {
        "offered_per_s": round(sent / elapsed),
        "absorbed_per_s": round(written / elapsed),
        "backlog_at_end": after.pending,
        # In seconds of offered load: about one flush interval (0.5 s) = the path kept up.
        "backlog_s": round(after.pending / max(1.0, sent / elapsed), 2),
        "failed_flushes": after.failed_flushes - before.failed_flushes,
        "dropped": after.dropped - before.dropped,
        "round_trips_per_s": round(flushes / elapsed, 2),
        "events_per_flush": round(written / max(1, flushes)),
        "flush_ms": store.flush_times.summary(),
        "capacity_per_s": round(written / store.busy_s) if store.busy_s else None,
        "bench_process_cpu_cores": round((time.process_time() - cpu0) / elapsed, 2),
        "redis_cpu_cores": round((await redis_cpu_s(admin) - redis_before) / elapsed, 2),
        "busy_cores": round(system.read()["machine_busy"], 2),
        "query_1000_under_load_ms": under_load.summary(),
        "loop_lag_ms": loop_lag.summary(),
    }


async def query_phase(tracker: PresenceTracker, users: list[str], seconds: float) -> dict[str, Any]:
    latency = Histogram()
    system = CpuSplit({})
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        states = await tracker.query(users)
        latency.record(time.perf_counter() - started)
    assert len(states) == len(users)
    return {"query_1000_ms": latency.summary(), "busy_cores": round(system.read()["machine_busy"], 2)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = args.redis_url
    prefix = f"bench-presence-{uuid.uuid4().hex[:8]}:"
    store = TimedStore(url, prefix=prefix, name="bench-presence")
    admin = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    tracker = PresenceTracker(store, flush_interval_s=0.5, sweep_interval_s=3600)
    n = args.devices or int(args.rate)
    devices = [(f"user{i}", f"sock{i}") for i in range(n)]
    try:
        await store.ping()
        await tracker.start()
        for user, device in devices:
            await tracker.connected(user, device)
        if not await tracker.flush():
            raise SystemExit("presence bench: the hellos could not be written")
        store.flush_times, store.busy_s = Histogram(), 0.0
        beats = await heartbeat_phase(tracker, store, admin, devices, rate=args.rate, duration=args.duration)
        # Query population: online, offline after a clean close, never seen.
        third = QUERY_USERS // 3
        for user, device in devices[third : 2 * third]:
            await tracker.disconnected(user, device)
        await tracker.flush()
        users = [u for u, _ in devices[: 2 * third]] + [f"ghost{i}" for i in range(QUERY_USERS - 2 * third)]
        queries = await query_phase(tracker, users, args.query_s)
    finally:
        await tracker.close()
        try:
            await store.purge()
        finally:
            await store.close()
            await admin.aclose()
    params = {"rate": args.rate, "devices": n, "duration_s": args.duration, "query_s": args.query_s, "flush_interval_s": 0.5}
    return {"params": params, "heartbeats": beats, "query": queries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=30_000, help="heartbeats offered per second")
    parser.add_argument("--devices", type=int, default=0, help="sockets (default: rate × 1 s)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of heartbeats measured")
    parser.add_argument("--query-s", type=float, default=3.0, help="seconds of back-to-back queries")
    parser.add_argument("--redis-url", default=os.environ.get("CHAT_REDIS_URL", "redis://127.0.0.1:6379"))
    args = parser.parse_args()
    result = asyncio.run(run(args))
    beats, query = result["heartbeats"], result["query"]
    absorbed, p99 = beats["absorbed_per_s"], query["query_1000_ms"]["p99_ms"]
    result["verdict"] = {
        "heartbeats": verdict(absorbed, TARGET_HEARTBEATS_PER_S, higher_is_better=True),
        "query_p99": verdict(p99, TARGET_QUERY_P99_MS, higher_is_better=False),
    }
    path = write_result("presence", result)
    print(
        f"presence: {absorbed:,} heartbeats/s absorbed of {beats['offered_per_s']:,} offered "
        f"(target ≥ {TARGET_HEARTBEATS_PER_S:,.0f}: {result['verdict']['heartbeats']}; backlog {beats['backlog_s']} s, "
        f"{beats['round_trips_per_s']} round trips/s, flush p99 {beats['flush_ms']['p99_ms']} ms, capacity ~{beats['capacity_per_s']:,}/s); "
        f"query of {QUERY_USERS} users p99 {p99} ms (target ≤ {TARGET_QUERY_P99_MS:.0f}: {result['verdict']['query_p99']}; "
        f"under load p99 {beats['query_1000_under_load_ms']['p99_ms']} ms); busy cores {beats['busy_cores']}/{os.cpu_count()} → {path}"
    )


if __name__ == "__main__":
    main()
