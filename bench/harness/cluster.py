"""Runs on the real Cassandra + Redis that ``scripts/services.sh up`` started (never started,
stopped or reconfigured here): a keyspace per run (created with ``chat migrate``, dropped at the
end), nodes configured for them, the services' processes for the CPU split, Cassandra's GC pauses."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.harness.measure import CpuSplit, wait_quiet
from bench.harness.node import BENCH_SECRET, GENEROUS_LIMITS, Node, server_env

CASSANDRA_HOSTS = os.environ.get("BENCH_CASSANDRA_HOSTS", "127.0.0.1:" + os.environ.get("CASSANDRA_PORT", "9042"))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:" + os.environ.get("REDIS_PORT", "6379") + "/0")


def add_cluster_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cassandra-hosts", default=CASSANDRA_HOSTS, help="CHAT_CASSANDRA_HOSTS of the nodes (default %(default)s)")
    parser.add_argument("--redis-url", default=REDIS_URL, help="CHAT_REDIS_URL of the nodes (default %(default)s)")
    parser.add_argument("--consistency", default="ONE", help="CHAT_CASSANDRA_CONSISTENCY (default %(default)s: a single-node Cassandra)")
    parser.add_argument("--keyspace", help="use this existing keyspace (default: a fresh chat_bench_<name>_<hex>, dropped at the end)")
    parser.add_argument("--keep-keyspace", action="store_true", help="do not drop the fresh keyspace at the end")


def store_env(args: argparse.Namespace, keyspace: str) -> dict[str, str]:
    """The ``CHAT_*`` variables that point a node, ``chat migrate`` or ``from_env`` at the store."""
    return {
        "CHAT_CASSANDRA_HOSTS": args.cassandra_hosts,
        "CHAT_CASSANDRA_KEYSPACE": keyspace,
        "CHAT_CASSANDRA_CONSISTENCY": args.consistency,
        "CHAT_JWT_SECRET": BENCH_SECRET,  # else `chat migrate` would write a dev secret into the tree
    }


def cql_session(hosts: str) -> Any:
    """A plain blocking driver session (setup, facts and cleanup only)."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    host, _, port = hosts.split(",", 1)[0].strip().partition(":")
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=60)
    return Cluster([(host, int(port or 9042))], protocol_version=4, execution_profiles={EXEC_PROFILE_DEFAULT: profile}).connect()


@contextlib.contextmanager
def bench_keyspace(args: argparse.Namespace, name: str) -> Iterator[str]:
    """``--keyspace``, or a fresh one migrated by the checkout's ``chat migrate`` and dropped at the end."""
    if args.keyspace:
        yield args.keyspace
        return
    keyspace = f"chat_bench_{name}_{uuid.uuid4().hex[:6]}"
    env = {**os.environ, **store_env(args, keyspace)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "chat", "migrate"], cwd=args.checkout, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode:
            raise RuntimeError(f"chat migrate failed ({done.returncode}): {done.stdout}{done.stderr}")
        yield keyspace
    finally:
        if not args.keep_keyspace:
            try:
                session = cql_session(args.cassandra_hosts)
                try:
                    session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
                finally:
                    session.cluster.shutdown()
            except Exception as exc:  # noqa: BLE001 - report, never mask the benchmark's own error
                print(f"warning: could not drop keyspace {keyspace}: {exc}")


def start_node(args: argparse.Namespace, keyspace: str, worker_id: int, name: str, *, dynamic: Mapping[str, object] | None = None) -> Node:
    """A node on the shared Cassandra + Redis with its own Snowflake worker ID; ``dynamic``: the
    dynamic settings it finds in its data dir at start (``config.json``, the embedded config store)."""
    env = {
        **GENEROUS_LIMITS,
        **store_env(args, keyspace),
        "CHAT_REDIS_URL": args.redis_url,
        "CHAT_WORKER_ID": str(worker_id),
        **server_env(args),
    }
    # Prepared statements, Redis and a cold driver: allow for a slow first start on a busy machine.
    node = Node(env=env, name=name, checkout=args.checkout, cpus=args.server_cpus)
    if dynamic:
        (node.data_dir / "config.json").write_text(json.dumps(dict(dynamic)))
    return node.start(timeout_s=120)


def settle(max_busy_cores: float = 0.4, timeout_s: float = 30.0) -> float:
    """Wait (bounded) for the machine to calm down: a new keyspace makes Cassandra flush and compact
    its schema tables for seconds, which would otherwise be counted in the first window."""
    return round(wait_quiet(max_busy_cores=max_busy_cores, timeout_s=timeout_s, sample_s=1.0), 3)


def _cmdline(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    return []


def _find(match: Any) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and match(_cmdline(int(entry.name))):
            return int(entry.name)
    return None


class Services:
    """The Cassandra JVM and Redis server behind ``args`` (found by port in /proc)."""

    def __init__(self, args: argparse.Namespace) -> None:
        cport = args.cassandra_hosts.split(",")[0].rpartition(":")[2] or "9042"
        rport = urlsplit(args.redis_url).port or 6379
        self.hosts = args.cassandra_hosts
        self.cassandra = _find(
            lambda c: (
                "org.apache.cassandra.service.CassandraDaemon" in c
                and all(a == f"-Dcassandra.native_transport_port={cport}" for a in c if a.startswith("-Dcassandra.native_transport_port="))
            )
        )
        self.redis = _find(lambda c: bool(c) and c[0].startswith("redis-server") and f":{rport}" in c[0])

    def split(self, nodes: Mapping[str, int], loadgen: list[int]) -> CpuSplit:
        """CPU of each node (and its event-loop thread), Cassandra, Redis and the load generator."""
        return CpuSplit(
            {**{k: [v] for k, v in nodes.items()}, "cassandra": [self.cassandra], "redis": [self.redis], "loadgen": loadgen},
            main_thread_of=list(nodes),
        )

    def facts(self) -> dict[str, Any]:
        """Cassandra's version and the settings it *runs* with (the yaml may have changed since)."""
        out: dict[str, Any] = {"cassandra_hosts": self.hosts, "cassandra_pid": self.cassandra, "redis_pid": self.redis}
        with contextlib.suppress(Exception):
            session = cql_session(self.hosts)
            try:
                out["cassandra_version"] = session.execute("SELECT release_version FROM system.local").one().release_version
                rows = session.execute(
                    "SELECT name, value FROM system_views.settings WHERE name IN ('paxos_variant', 'memtable_allocation_type')"
                )
                out["cassandra_settings"] = {r.name: r.value for r in rows}
            finally:
                session.cluster.shutdown()
        return out

    def gc_pauses(self, t0: float, t1: float | None = None) -> dict[str, Any]:
        """Cassandra's stop-the-world pauses between two wall-clock times, from its ``-Xlog:gc`` file."""
        t1 = t1 or time.time()
        logs = [a.split("file=", 1)[1].split(":", 1)[0] for a in _cmdline(self.cassandra or 0) if a.startswith("-Xlog:gc") and "file=" in a]
        if not logs:
            return {"log": None}
        pauses: list[tuple[float, str, float]] = []
        with contextlib.suppress(OSError):
            for line in Path(logs[0]).read_text(errors="replace").splitlines():
                if m := _GC_LINE.match(line):
                    ts = dt.datetime.strptime(m["ts"], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.UTC).timestamp()
                    if t0 <= ts <= t1:
                        pauses.append((ts, m["what"], float(m["ms"])))
        ms = [p[2] for p in pauses]
        return {
            "log": logs[0],
            "count": len(ms),
            "total_ms": round(sum(ms), 1),
            "max_ms": round(max(ms, default=0.0), 1),
            "over_10ms": sum(x > 10 for x in ms),
            "largest": [{"at_s": round(ts - t0, 2), "what": w, "ms": x} for ts, w, x in sorted(pauses, key=lambda p: -p[2])[:5]],
        }


_GC_LINE = re.compile(r"^\[(?P<ts>[0-9T:.\-]+)[+-]\d{4}\].*? (?P<what>Pause [A-Za-z]+(?: \([^)]*\))*).*? (?P<ms>[0-9.]+)ms$")


def gc_line(gc: Mapping[str, Any]) -> str:
    if not gc.get("log"):
        return "Cassandra GC pauses: n/a"
    return f"Cassandra GC pauses: {gc['count']} ({gc['over_10ms']} > 10 ms), total {gc['total_ms']:.0f} ms, max {gc['max_ms']:.1f} ms"


def cpu_line(split: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in split.items())
