"""Shared pieces of the cluster benchmarks: nodes on the real Cassandra + Redis, a keyspace of
their own (dropped at the end), and the CPU split between node(s), Cassandra, Redis and the
load generator.

The services are the ones ``scripts/services.sh up`` started (Cassandra on 9042, Redis on
6379); these scripts never start, stop or reconfigure them. Every run uses a fresh keyspace
``chat_bench_<hex>`` and drops it afterwards (``--keep-keyspace`` keeps it for inspection).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bench.common import (
    CLK_TCK,
    GENEROUS_LIMITS,
    BenchServer,
    SystemCpu,
    proc_cpu_s,
    wait_quiet,
)

CASSANDRA_HOSTS = os.environ.get("BENCH_CASSANDRA_HOSTS", "127.0.0.1:" + os.environ.get("CASSANDRA_PORT", "9042"))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:" + os.environ.get("REDIS_PORT", "6379") + "/0")


def add_cluster_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cassandra-hosts", default=CASSANDRA_HOSTS, help="CHAT_CASSANDRA_HOSTS of the nodes (default %(default)s)")
    parser.add_argument("--redis-url", default=REDIS_URL, help="CHAT_REDIS_URL of the nodes (default %(default)s)")
    parser.add_argument("--consistency", default="ONE", help="CHAT_CASSANDRA_CONSISTENCY (default %(default)s: single-node Cassandra)")
    parser.add_argument("--keyspace", help="use this keyspace (default: a fresh chat_bench_<hex>, dropped at the end)")
    parser.add_argument("--keep-keyspace", action="store_true", help="do not drop the keyspace at the end")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for the node(s) (repeatable)")
    parser.add_argument("--profile", action="store_true", help="py-spy the (receiving) node during the measured window")
    parser.add_argument(
        "--patch",
        action="append",
        default=[],
        choices=["switch1ms", "gclog", "gcfreeze"],
        help="run the node(s) (and, in store_throughput, the in-process store) with a prototype from bench.cassandra_variants (repeatable)",
    )


def cassandra_port(hosts: str) -> int:
    first = hosts.split(",")[0].strip()
    return int(first.rpartition(":")[2]) if ":" in first else 9042


def redis_port(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port or 6379


def node_env(args: argparse.Namespace, keyspace: str, worker_id: int) -> dict[str, str]:
    """Environment of a node on the shared services (as tests/e2e/test_cluster.py starts them)."""
    return {
        **GENEROUS_LIMITS,
        "CHAT_CASSANDRA_HOSTS": args.cassandra_hosts,
        "CHAT_CASSANDRA_KEYSPACE": keyspace,
        "CHAT_CASSANDRA_CONSISTENCY": args.consistency,
        "CHAT_CASSANDRA_MIGRATE": "1",
        "CHAT_REDIS_URL": args.redis_url,
        "CHAT_WORKER_ID": str(worker_id),
        **dict(kv.split("=", 1) for kv in args.server_env),
    }


def cql_session(hosts: str, keyspace: str | None = None) -> Any:
    """A plain blocking driver session (setup and cleanup only)."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    first = hosts.split(",")[0].strip()
    host, _, port = first.partition(":")
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=60)
    cluster = Cluster([(host, int(port or 9042))], protocol_version=5, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    return cluster.connect(keyspace)


def drop_keyspace(hosts: str, keyspace: str) -> None:
    session = cql_session(hosts)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
    finally:
        session.cluster.shutdown()


@contextlib.contextmanager
def bench_keyspace(args: argparse.Namespace, name: str) -> Iterator[str]:
    """The keyspace of this run: ``--keyspace`` or a fresh one, dropped at the end unless kept."""
    keyspace = args.keyspace or f"chat_bench_{name}_{uuid.uuid4().hex[:6]}"
    try:
        yield keyspace
    finally:
        if not args.keep_keyspace and not args.keyspace:
            try:
                drop_keyspace(args.cassandra_hosts, keyspace)
            except Exception as exc:  # noqa: BLE001 - report, never mask the benchmark's own error
                print(f"warning: could not drop keyspace {keyspace}: {exc}")


def start_node(args: argparse.Namespace, keyspace: str, worker_id: int, name: str, env: Mapping[str, str] | None = None) -> BenchServer:
    # Migrations + prepare + Redis: allow for a slow first start on a busy machine.
    argv = None
    if getattr(args, "patch", None):
        argv = [sys.executable, "-m", "bench.cassandra_variants", *(x for p in args.patch for x in ("--patch", p))]
    return BenchServer(env={**node_env(args, keyspace, worker_id), **(env or {})}, name=name, argv=argv).start(timeout_s=120)


def settle(max_busy_cores: float = 0.4, timeout_s: float = 30.0) -> float:
    """Wait (bounded) for the machine to calm down: creating a keyspace and its tables makes
    Cassandra flush and compact its schema tables for several seconds, which would otherwise be
    counted in the first measurement. Returns the last busy-cores sample."""
    return round(wait_quiet(max_busy_cores=max_busy_cores, timeout_s=timeout_s, sample_s=1.0), 3)


_PYGC = re.compile(r"python gc gen(\d) took ([0-9.]+) ms")


def node_log_stats(server: BenchServer) -> dict[str, Any]:
    """What the node logged: warnings (e.g. relay publishes that failed, so the message was stored
    but not delivered live) and, with ``--patch gclog``, its slow Python garbage collections."""
    try:
        lines = server.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    warnings = [ln for ln in lines if " WARNING " in ln or ln.startswith("WARNING")]
    gcs = [(int(m.group(1)), float(m.group(2))) for m in map(_PYGC.search, lines) if m]
    return {
        "warnings": len(warnings),
        "warning_samples": [w[-200:] for w in warnings if "python gc" not in w][:5],
        "relay_publish_failures": sum(1 for w in warnings if "relay publish failed" in w),
        "python_gc_over_2ms": len(gcs),
        "python_gc_max_ms": max((ms for _, ms in gcs), default=0.0),
        "python_gc_total_ms": round(sum(ms for _, ms in gcs), 1),
        "python_gc_gen2": sum(1 for g, _ in gcs if g == 2),
    }


# Profile grouping: where a Cassandra + Redis node spends its time, by component

_GROUPS_MAIN = (
    ("cassandra request on the loop (execute_async in the Cython driver, futures, wait_for, timers)", ("CassandraMessageStore._request",)),
    ("cassandra results handed to the loop (self-pipe read, resolve)", ("_read_from_self", "_resolve (chat")),
    ("redis publish (pool, command, timeout)", ("RedisRelay.publish", "Redis.execute_command", "BlockingConnectionPool", "_bounded")),
    ("relay reader + hub fan-out", ("RedisRelay._run", "RedisRelay._read", "Hub._deliver")),
    ("websocket writes (acks, deliveries, replies)", ("Session._write_loop", "WebSocketsSansIOProtocol.send")),
    ("websocket reads, frame parsing, session", ("Session.receive", "_read_ready", "data_received", "ws_endpoint")),
    ("asyncio loop machinery", ("_run_once", "run_forever")),
)
_IDLE = ("select (selectors", "EpollSelector.select", "Condition.wait", "_worker (concurrent", "wait (threading")


def profile_groups(path: Path) -> dict[str, Any]:
    """py-spy raw stacks → shares of the main thread's working samples per component, and the
    share of all working samples spent on the Cassandra driver's own I/O thread."""
    main: dict[str, int] = {}
    main_total = other_threads = driver_thread = handoff = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        body = frames[1:]
        if body and body[-1].startswith(_IDLE):
            continue
        if "MainThread" in frames[0]:
            main_total += count
            for name, pats in _GROUPS_MAIN:
                if any(any(p in f for p in pats) for f in body):
                    main[name] = main.get(name, 0) + count
                    break
            else:
                main["other"] = main.get("other", 0) + count
        else:
            other_threads += count
            if any("LibevLoop._run_loop" in f for f in body):
                driver_thread += count
                if any("_write_to_self" in f for f in body):
                    handoff += count
    total = main_total + other_threads
    return {
        "main_thread_share_of_working": round(100 * main_total / total, 1) if total else None,
        "main_thread_pct": {k: round(100 * v / main_total, 1) for k, v in sorted(main.items(), key=lambda kv: -kv[1])} if main_total else {},
        "driver_io_thread_share_of_working": round(100 * driver_thread / total, 1) if total else None,
        "driver_handoff_call_soon_threadsafe_share_of_working": round(100 * handoff / total, 1) if total else None,
    }


def print_profile_groups(groups: Mapping[str, Any]) -> None:
    print(f"  main thread {groups['main_thread_share_of_working']} % of working samples; Cassandra driver I/O thread "
          f"{groups['driver_io_thread_share_of_working']} % (of which call_soon_threadsafe hand-off {groups['driver_handoff_call_soon_threadsafe_share_of_working']} %)")
    for name, pct in groups["main_thread_pct"].items():
        print(f"    {pct:5.1f}% of the main thread: {name}")


# Service processes and the CPU split


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def find_cassandra_pid(port: int) -> int | None:
    """The Cassandra JVM serving CQL on ``port`` (the one scripts/services.sh started)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        cmd = _cmdline(int(entry.name))
        if "org.apache.cassandra.service.CassandraDaemon" in cmd:
            ports = [a.split("=", 1)[1] for a in cmd if a.startswith("-Dcassandra.native_transport_port=")]
            if not ports or ports[0] == str(port):
                return int(entry.name)
    return None


def find_redis_pid(port: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        cmd = _cmdline(int(entry.name))
        if cmd and cmd[0].startswith("redis-server") and f":{port}" in cmd[0]:
            return int(entry.name)
    return None


def cassandra_version(hosts: str) -> str:
    with contextlib.suppress(Exception):
        session = cql_session(hosts)
        try:
            return str(session.execute("SELECT release_version FROM system.local").one().release_version)
        finally:
            session.cluster.shutdown()
    return "?"


def running_settings(hosts: str, names: tuple[str, ...] = ("paxos_variant", "paxos_state_purging", "memtable_allocation_type")) -> dict[str, str]:
    """Settings of the *running* Cassandra (``system_views.settings``): the yaml on disk may have
    changed since it started."""
    with contextlib.suppress(Exception):
        session = cql_session(hosts)
        try:
            wanted = ", ".join(f"'{n}'" for n in names)  # fixed identifiers, not user input
            rows = session.execute(f"SELECT name, value FROM system_views.settings WHERE name IN ({wanted})")
            return {r.name: r.value for r in rows}
        finally:
            session.cluster.shutdown()
    return {}


class CpuSplit:
    """Cores used by each named group of processes between :meth:`reset` and :meth:`read`, plus the
    machine's busy cores and what is left for everything else (other people's load, kernel)."""

    def __init__(self, groups: Mapping[str, list[int | None]], *, main_thread_of: tuple[str, ...] = ()) -> None:
        self.groups = {k: [p for p in v if p] for k, v in groups.items()}
        # For these groups, also report the main thread (the node's event loop) on its own; the
        # rest of the process is "<name>_threads" (the Cassandra driver's libev I/O thread, mostly).
        self.main_thread_of = tuple(g for g in main_thread_of if self.groups.get(g))
        self.reset()

    def _cpu(self) -> dict[str, float]:
        out = {}
        for name, pids in self.groups.items():
            total = 0.0
            for pid in pids:
                with contextlib.suppress(OSError):
                    total += proc_cpu_s(pid)
            out[name] = total
        for name in self.main_thread_of:
            main = 0.0
            for pid in self.groups[name]:
                with contextlib.suppress(OSError):
                    main += thread_cpu_s(pid, pid)
            out[f"{name}_main_thread"] = main
        return out

    def reset(self) -> None:
        self._start = self._cpu()
        self._t = time.monotonic()
        self._wall = time.time()
        self._sys = SystemCpu()
        self.gc: dict[str, Any] = {}

    def read(self) -> dict[str, float]:
        now = self._cpu()
        dt = max(1e-9, time.monotonic() - self._t)
        out = {name: round((now[name] - self._start[name]) / dt, 3) for name in now}
        busy = self._sys.read()
        counted = sum(out[name] for name in self.groups)
        out["machine_busy"] = round(busy, 3)
        out["other"] = round(busy - counted, 3)
        cassandra = self.groups.get("cassandra")
        if cassandra:
            self.gc = gc_pauses(cassandra[0], self._wall, time.time())
        return out


_GC_LINE = re.compile(r"^\[(?P<ts>[0-9T:.\-]+)[+-]\d{4}\].*? (?P<what>Pause [A-Za-z]+(?: \([^)]*\))*).*? (?P<ms>[0-9.]+)ms$")


def gc_pauses(pid: int, t0: float, t1: float) -> dict[str, Any]:
    """Stop-the-world pauses of a JVM between two wall-clock times, from its ``-Xlog:gc:file=``."""
    path = None
    for arg in _cmdline(pid):
        if arg.startswith("-Xlog:gc") and "file=" in arg:
            path = arg.split("file=", 1)[1].split(":", 1)[0]
    if not path:
        return {"log": None}
    pauses: list[tuple[float, str, float]] = []
    with contextlib.suppress(OSError):
        for line in Path(path).read_text(errors="replace").splitlines():
            m = _GC_LINE.match(line)
            if not m:
                continue
            ts = dt.datetime.strptime(m.group("ts"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.UTC).timestamp()
            if t0 <= ts <= t1:
                pauses.append((ts, m.group("what"), float(m.group("ms"))))
    ms = [p[2] for p in pauses]
    return {
        "log": path,
        "count": len(ms),
        "total_ms": round(sum(ms), 1),
        "max_ms": round(max(ms), 1) if ms else 0.0,
        "over_10ms": sum(1 for x in ms if x > 10),
        "per_s": round(len(ms) / max(1e-9, t1 - t0), 2),
        "largest": sorted(({"at_s": round(ts - t0, 2), "what": w, "ms": x} for ts, w, x in pauses), key=lambda d: -d["ms"])[:5],
    }


def gc_line(gc: Mapping[str, Any]) -> str:
    if not gc or not gc.get("log"):
        return "GC pauses: n/a"
    return f"Cassandra GC pauses: {gc['count']} ({gc['over_10ms']} > 10 ms), total {gc['total_ms']:.0f} ms, max {gc['max_ms']:.1f} ms"


def thread_cpu_s(pid: int, tid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_line(split: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in split.items())


def service_groups(args: argparse.Namespace) -> dict[str, list[int | None]]:
    return {"cassandra": [find_cassandra_pid(cassandra_port(args.cassandra_hosts))], "redis": [find_redis_pid(redis_port(args.redis_url))]}


def cluster_facts(args: argparse.Namespace, keyspace: str) -> dict[str, Any]:
    pid = find_cassandra_pid(cassandra_port(args.cassandra_hosts))
    settings = running_settings(args.cassandra_hosts)
    return {
        "cassandra_hosts": args.cassandra_hosts,
        "cassandra_version": cassandra_version(args.cassandra_hosts),
        "cassandra_pid": pid,
        "paxos_variant": settings.get("paxos_variant", "?"),
        "cassandra_settings": settings,
        "redis_url": args.redis_url,
        "consistency": args.consistency,
        "keyspace": keyspace,
        "patches": list(getattr(args, "patch", []) or []),
    }
