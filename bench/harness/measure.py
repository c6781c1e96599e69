"""Measuring: latency histograms, CPU meters, machine facts, results files, common options."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Histogram:
    """Latency histogram: 10 µs buckets below 100 ms, 1 ms buckets above (to 120 s).

    Mergeable across processes (``to_dict``/``merge``), so workers need not ship raw samples.
    Percentiles are the upper edge of their bucket (conservative)."""

    FINE_US = 10
    FINE_LIMIT_US = 100_000
    COARSE_US = 1000
    LIMIT_US = 120_000_000

    def __init__(self) -> None:
        self.fine = [0] * (self.FINE_LIMIT_US // self.FINE_US)
        self.coarse: dict[int, int] = {}
        self.count = 0
        self.max_us = 0.0
        self.sum_us = 0.0

    def record(self, seconds: float) -> None:
        us = max(0.0, seconds * 1e6)
        self.count += 1
        self.sum_us += us
        self.max_us = max(self.max_us, us)
        if us < self.FINE_LIMIT_US:
            self.fine[int(us) // self.FINE_US] += 1
        else:
            b = int(min(us, self.LIMIT_US)) // self.COARSE_US
            self.coarse[b] = self.coarse.get(b, 0) + 1

    def merge(self, other: Histogram | Mapping[str, Any]) -> None:
        o = other if isinstance(other, Histogram) else Histogram.from_dict(other)
        for i, c in enumerate(o.fine):
            if c:
                self.fine[i] += c
        for b, c in o.coarse.items():
            self.coarse[b] = self.coarse.get(b, 0) + c
        self.count += o.count
        self.sum_us += o.sum_us
        self.max_us = max(self.max_us, o.max_us)

    def to_dict(self) -> dict[str, Any]:
        """A compact, JSON- and pickle-friendly form (non-empty buckets only)."""
        fine = {i: c for i, c in enumerate(self.fine) if c}
        return {"fine": fine, "coarse": self.coarse, "count": self.count, "max_us": self.max_us, "sum_us": self.sum_us}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Histogram:
        h = cls()
        for i, c in d["fine"].items():
            h.fine[int(i)] = c
        h.coarse = {int(b): c for b, c in d["coarse"].items()}
        h.count, h.max_us, h.sum_us = d["count"], d["max_us"], d["sum_us"]
        return h

    def percentile_ms(self, p: float) -> float:
        if not self.count:
            return float("nan")
        rank = max(1, math.ceil(self.count * p / 100))
        seen = 0
        for i, c in enumerate(self.fine):
            seen += c
            if seen >= rank:
                return min((i + 1) * self.FINE_US, self.max_us) / 1000
        for b in sorted(self.coarse):
            seen += self.coarse[b]
            if seen >= rank:
                return min((b + 1) * self.COARSE_US, self.max_us) / 1000
        return self.max_us / 1000

    def summary(self) -> dict[str, float]:
        """Count, p50/p90/p99/p99.9, max and mean, in ms."""
        out: dict[str, float] = {"count": self.count}
        for label, p in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("p999_ms", 99.9)):
            out[label] = round(self.percentile_ms(p), 3)
        out["max_ms"] = round(self.max_us / 1000, 3)
        out["mean_ms"] = round(self.sum_us / self.count / 1000, 3) if self.count else float("nan")
        return out


# CPU


def proc_cpu_s(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (all threads), or of one of its threads."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _machine_busy_s() -> float:
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(parts) - parts[3] - parts[4]) / CLK_TCK  # all but idle and iowait


class CpuSplit:
    """Cores used by named groups of processes between :meth:`reset` and :meth:`read`, the
    machine's busy cores, and ``other``: what neither group explains (someone else's load on a
    shared machine), so a figure taken during foreign load can be recognised and discarded."""

    def __init__(self, groups: Mapping[str, Iterable[int | None]], *, main_thread_of: Sequence[str] = ()) -> None:
        # A group with no known process (a node given by URL) is not measured, so not reported.
        self.groups = {name: known for name, pids in groups.items() if (known := [p for p in pids if p])}
        # The node's event loop is its main thread; the rest is e.g. the Cassandra driver's I/O thread.
        self.main_thread_of = [g for g in main_thread_of if self.groups.get(g)]
        self.reset()

    def _sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pids in self.groups.items():
            out[name] = sum(_cpu_or_zero(p) for p in pids)
        for name in self.main_thread_of:
            out[f"{name}_main_thread"] = sum(_cpu_or_zero(p, p) for p in self.groups[name])
        return out

    def reset(self) -> None:
        self._start, self._busy, self._t = self._sample(), _machine_busy_s(), time.monotonic()
        self.wall_start = time.time()

    def read(self) -> dict[str, float]:
        """Cores per group (and per main thread), ``machine_busy`` and ``other`` since :meth:`reset`."""
        now, busy = self._sample(), _machine_busy_s()
        span = max(1e-9, time.monotonic() - self._t)
        out = {name: round((now[name] - self._start[name]) / span, 3) for name in now}
        out["machine_busy"] = round((busy - self._busy) / span, 3)
        out["other"] = round(out["machine_busy"] - sum(out[g] for g in self.groups), 3)
        return out


def _cpu_or_zero(pid: int, tid: int | None = None) -> float:
    # A process that exited mid-window (a worker that failed) counts as idle rather than aborting the run.
    with contextlib.suppress(OSError):
        return proc_cpu_s(pid, tid)
    return 0.0


def us_per(cores: float | None, per_s: float) -> float | None:
    """CPU microseconds per operation: ``cores`` busy while doing ``per_s`` operations a second."""
    return round(cores / per_s * 1e6, 1) if cores is not None and per_s else None


def wait_quiet(max_busy_cores: float = 0.3, timeout_s: float = 90.0, sample_s: float = 2.0) -> float:
    """Wait (bounded) until the machine is nearly idle; returns the last busy-cores sample."""
    deadline = time.monotonic() + timeout_s
    while True:
        meter = CpuSplit({})
        time.sleep(sample_s)  # a measurement window, not a wait for an event
        busy = meter.read()["machine_busy"]
        if busy <= max_busy_cores or time.monotonic() >= deadline:
            return busy


def parse_cpus(spec: str) -> set[int]:
    """``"0"``, ``"2-5"``, ``"0,3-4"`` → a set of CPU numbers (taskset's list syntax)."""
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


# Facts and results


def git_commit(tree: Path) -> str:
    """Short commit of a checkout, ``+dirty`` when its ``chat/`` has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True, timeout=10, check=False).stdout.strip()

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "chat") else "")
    return "?"


def machine_info(checkout: Path = ROOT) -> dict[str, Any]:
    """Where and on what a figure was measured: CPU, RAM, OS, Python, package versions, commit."""

    def first(path: str, prefix: str) -> str:
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines():
                if line.startswith(prefix):
                    return line.split(":" if ":" in line else "=", 1)[1].strip().strip('"')
        return ""

    packages: dict[str, str | None] = {}
    for pkg in ("uvicorn", "websockets", "starlette", "orjson", "uvloop"):
        try:
            packages[pkg] = version(pkg)
        except PackageNotFoundError:
            packages[pkg] = None
    mem_kib = first("/proc/meminfo", "MemTotal").split()
    return {
        "nproc": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "cpu": first("/proc/cpuinfo", "model name"),
        "ram_gib": round(int(mem_kib[0]) / 1024 / 1024, 1) if mem_kib else None,
        "python": platform.python_version(),
        "os": f"{first('/etc/os-release', 'PRETTY_NAME') or platform.platform()} (kernel {platform.release()})",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "packages": packages,
        "commit": git_commit(checkout),
        "checkout": str(checkout),
        "loadavg_1m": float(Path("/proc/loadavg").read_text().split()[0]),
    }


def write_result(name: str, data: Mapping[str, Any], *, checkout: Path = ROOT) -> Path:
    """``bench/results/<name>.json`` with the command line and the machine facts."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    command = " ".join([Path(sys.executable).name, *(["-m", spec.name] if spec else sys.argv[:1]), *sys.argv[1:]])
    payload = {"benchmark": name, "command": command, "machine": machine_info(checkout), **data}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def report(name: str, result: Mapping[str, Any], *, line: str, target: str, checkout: Path = ROOT) -> Path:
    """Write ``bench/results/<name>.json`` and print the figure's one result line:
    ``<name>: <line>; target <target>: <verdict>  [results file]``."""
    path = write_result(name, result, checkout=checkout)
    print(f"{name}: {line}; target {target}: {result['verdict']}  [bench/results/{path.name}]", flush=True)
    return path


def verdict(value: float | None, target: float, *, higher_is_better: bool) -> str:
    """PASS or MISS against a target; a missing value is a miss."""
    if value is None or math.isnan(value):
        return "MISS (no value)"
    return "PASS" if (value >= target if higher_is_better else value <= target) else "MISS"


def headline(**metrics: tuple[float | None, str]) -> dict[str, dict[str, Any]]:
    """The figures ``bench.compare`` puts side by side: ``name=(value, "higher"|"lower")``."""
    return {name: {"value": value, "better": better} for name, (value, better) in metrics.items()}


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None, *, name: str, quick: Mapping[str, Any]) -> argparse.Namespace:
    """Adds ``--quick`` (a smoke run with the ``quick`` defaults; options given explicitly still
    win) and ``--name`` (results file name), then parses."""
    parser.add_argument("--quick", action="store_true", help=f"smoke run, seconds, not figures to quote: {dict(quick)}")
    parser.add_argument("--name", default=name, help="results file name under bench/results/ (default %(default)s)")
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**quick)
        args = parser.parse_args(argv)
    return args
