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
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bench.common import GENEROUS_LIMITS, BenchServer, SystemCpu, proc_cpu_s

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
    return BenchServer(env={**node_env(args, keyspace, worker_id), **(env or {})}, name=name).start(timeout_s=120)


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


def paxos_variant(cassandra_pid: int | None) -> str:
    """``paxos_variant`` of the running Cassandra's yaml (v1 when unset: Cassandra 5.0's default)."""
    if cassandra_pid is None:
        return "?"
    for arg in _cmdline(cassandra_pid):
        if arg.startswith("-Dcassandra.config=file://"):
            with contextlib.suppress(OSError):
                for line in Path(arg.split("file://", 1)[1]).read_text().splitlines():
                    if line.strip().startswith("paxos_variant:"):
                        return line.split(":", 1)[1].strip()
            return "v1 (default)"
    return "?"


class CpuSplit:
    """Cores used by each named group of processes between :meth:`reset` and :meth:`read`, plus the
    machine's busy cores and what is left for everything else (other people's load, kernel)."""

    def __init__(self, groups: Mapping[str, list[int | None]]) -> None:
        self.groups = {k: [p for p in v if p] for k, v in groups.items()}
        self.reset()

    def _cpu(self) -> dict[str, float]:
        out = {}
        for name, pids in self.groups.items():
            total = 0.0
            for pid in pids:
                with contextlib.suppress(OSError):
                    total += proc_cpu_s(pid)
            out[name] = total
        return out

    def reset(self) -> None:
        self._start = self._cpu()
        self._t = time.monotonic()
        self._sys = SystemCpu()

    def read(self) -> dict[str, float]:
        now = self._cpu()
        dt = max(1e-9, time.monotonic() - self._t)
        out = {name: round((now[name] - self._start[name]) / dt, 3) for name in self.groups}
        busy = self._sys.read()
        out["machine_busy"] = round(busy, 3)
        out["other"] = round(busy - sum(v for k, v in out.items() if k != "machine_busy"), 3)
        return out


def cpu_line(split: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in split.items())


def service_groups(args: argparse.Namespace) -> dict[str, list[int | None]]:
    return {"cassandra": [find_cassandra_pid(cassandra_port(args.cassandra_hosts))], "redis": [find_redis_pid(redis_port(args.redis_url))]}


def cluster_facts(args: argparse.Namespace, keyspace: str) -> dict[str, Any]:
    pid = find_cassandra_pid(cassandra_port(args.cassandra_hosts))
    return {
        "cassandra_hosts": args.cassandra_hosts,
        "cassandra_version": cassandra_version(args.cassandra_hosts),
        "cassandra_pid": pid,
        "paxos_variant": paxos_variant(pid),
        "redis_url": args.redis_url,
        "consistency": args.consistency,
        "keyspace": keyspace,
    }
