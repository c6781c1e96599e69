"""Shared pieces of the benchmarks: the server under test, machine facts, results, stats, profiling."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BENCH_SECRET = "bench-secret-" + "b" * 40
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Generous per-socket limits: the benchmarks measure the message path, not the limiter.
GENEROUS_LIMITS = {
    "CHAT_RATE_PER_S": "1000000",
    "CHAT_RATE_BURST": "1000000",
    "CHAT_FLOOD_STRIKES": "1000000",
}


# Machine and results


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"') + f" (kernel {platform.release()})"
    versions = {}
    for pkg in ("uvicorn", "websockets", "starlette", "orjson", "uvloop"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:  # noqa: BLE001
            versions[pkg] = None
    commit = ""
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "chat"], cwd=ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        if dirty:
            commit += "+dirty"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "os": os_name,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "packages": versions,
        "commit": commit,
        "loadavg_1m": loadavg(),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine_info(), "command": " ".join([Path(sys.executable).name, *sys.argv]), **data}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def verdict(value: float, target: float, *, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "MISS"


# Statistics


class Histogram:
    """Latency histogram in microseconds: 10 µs buckets below 100 ms, 1 ms buckets above (to 120 s).

    Mergeable across processes (``to_list``/``merge``), so workers need not ship raw samples.
    """

    FINE = 10  # µs
    FINE_LIMIT = 100_000  # µs
    COARSE = 1000  # µs
    LIMIT = 120_000_000

    def __init__(self) -> None:
        self.fine = [0] * (self.FINE_LIMIT // self.FINE)
        self.coarse: dict[int, int] = {}
        self.count = 0
        self.max_us = 0.0
        self.sum_us = 0.0

    def record(self, seconds: float) -> None:
        us = seconds * 1e6
        if us < 0:
            us = 0.0
        self.count += 1
        self.sum_us += us
        if us > self.max_us:
            self.max_us = us
        if us < self.FINE_LIMIT:
            self.fine[int(us) // self.FINE] += 1
        else:
            b = int(min(us, self.LIMIT)) // self.COARSE
            self.coarse[b] = self.coarse.get(b, 0) + 1

    def merge(self, other: Histogram | dict[str, Any]) -> None:
        if isinstance(other, dict):
            other = Histogram.from_dict(other)
        for i, c in enumerate(other.fine):
            if c:
                self.fine[i] += c
        for b, c in other.coarse.items():
            self.coarse[b] = self.coarse.get(b, 0) + c
        self.count += other.count
        self.sum_us += other.sum_us
        self.max_us = max(self.max_us, other.max_us)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fine": {i: c for i, c in enumerate(self.fine) if c},
            "coarse": self.coarse,
            "count": self.count,
            "max_us": self.max_us,
            "sum_us": self.sum_us,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        h = cls()
        for i, c in d["fine"].items():
            h.fine[int(i)] = c
        h.coarse = {int(b): c for b, c in d["coarse"].items()}
        h.count = d["count"]
        h.max_us = d["max_us"]
        h.sum_us = d["sum_us"]
        return h

    def percentile_ms(self, p: float) -> float:
        """Upper edge of the bucket holding the p-th percentile, in ms (conservative)."""
        if not self.count:
            return float("nan")
        rank = max(1, math.ceil(self.count * p / 100))
        seen = 0
        for i, c in enumerate(self.fine):
            seen += c
            if seen >= rank:
                return min((i + 1) * self.FINE, self.max_us) / 1000
        for b in sorted(self.coarse):
            seen += self.coarse[b]
            if seen >= rank:
                return min((b + 1) * self.COARSE, self.max_us) / 1000
        return self.max_us / 1000

    def summary(self) -> dict[str, float]:
        return {
            "count": self.count,
            "p50_ms": round(self.percentile_ms(50), 3),
            "p90_ms": round(self.percentile_ms(90), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
            "p999_ms": round(self.percentile_ms(99.9), 3),
            "max_ms": round(self.max_us / 1000, 3),
            "mean_ms": round(self.sum_us / self.count / 1000, 3) if self.count else float("nan"),
        }


# Processes


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a whole process (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class CpuMeter:
    """CPU utilisation of a process between two readings, as a fraction of one core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.reset()

    def reset(self) -> None:
        self._cpu = proc_cpu_s(self.pid)
        self._t = time.monotonic()

    def read(self) -> float:
        cpu, t = proc_cpu_s(self.pid), time.monotonic()
        return (cpu - self._cpu) / max(1e-9, t - self._t)


class SystemCpu:
    """Busy cores of the whole machine between two readings (to spot other load on the box)."""

    def __init__(self) -> None:
        self.reset()

    @staticmethod
    def _read() -> tuple[int, int]:
        parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = parts[3] + parts[4]
        return sum(parts[:8]) - idle, sum(parts[:8])

    def reset(self) -> None:
        self._busy, self._total = self._read()
        self._t = time.monotonic()

    def read(self) -> float:
        busy, _ = self._read()
        return (busy - self._busy) / CLK_TCK / max(1e-9, time.monotonic() - self._t)


def wait_quiet(max_busy_cores: float = 0.3, timeout_s: float = 90.0, sample_s: float = 2.0) -> float:
    """Wait (bounded) until the machine is nearly idle; returns the last busy-cores sample."""
    deadline = time.monotonic() + timeout_s
    while True:
        meter = SystemCpu()
        time.sleep(sample_s)
        busy = meter.read()
        if busy <= max_busy_cores or time.monotonic() >= deadline:
            return busy


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Target:
    """Where the load goes: a server this benchmark started, or one given with ``--url``."""

    ws_url: str
    secret: str
    audience: str = "chat"
    pid: int | None = None  # known only for a server we started (CPU, RSS, profiles)

    @property
    def host(self) -> str:
        return urlsplit(self.ws_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.ws_url).port or 80

    @property
    def ws_path(self) -> str:
        return urlsplit(self.ws_url).path or "/v1/ws"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def token(self, user: str, ttl_s: int = 6 * 3600) -> str:
        import jwt

        now = int(time.time())
        return jwt.encode({"sub": user, "aud": self.audience, "iat": now, "exp": now + ttl_s}, self.secret, algorithm="HS256")

    def http(self, user: str) -> httpx.Client:
        return httpx.Client(base_url=self.http_url, headers={"Authorization": f"Bearer {self.token(user)}"}, timeout=30)

    def create_channel(self, creator: str, kind: str, name: str, members: list[str]) -> str:
        with self.http(creator) as client:
            r = client.post("/v1/channels", json={"kind": kind, "name": name, "members": members})
            r.raise_for_status()
            return str(r.json()["channel"]["id"])


class BenchServer:
    """A chat node in a subprocess with its own temporary data dir (on disk: fsync is real).

    ``argv`` defaults to ``python -m chat serve``; ``bench.serve_variant`` runs the same app
    under a different uvicorn configuration. Ready when ``/readyz`` answers 200.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        argv: list[str] | None = None,
        extra_pythonpath: str | None = None,
        name: str = "bench",
    ) -> None:
        self.port = free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"chat-{name}-", dir=os.environ.get("BENCH_TMP") or None))
        self.env = {
            **os.environ,
            "CHAT_HOST": "127.0.0.1",
            "CHAT_PORT": str(self.port),
            "CHAT_DATA_DIR": str(self.data_dir),
            "CHAT_JWT_SECRET": BENCH_SECRET,
            "CHAT_NODE_ID": f"{name}-{self.port}",
            "CHAT_DRAIN_GRACE_S": "1",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        if extra_pythonpath:
            self.env["PYTHONPATH"] = extra_pythonpath + os.pathsep + self.env.get("PYTHONPATH", "")
        self.argv = argv or [sys.executable, "-m", "chat", "serve"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "server.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def target(self) -> Target:
        return Target(ws_url=f"ws://127.0.0.1:{self.port}/v1/ws", secret=BENCH_SECRET, pid=self.pid)

    def start(self, timeout_s: float = 30.0) -> BenchServer:
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become ready:\n" + self.log_tail())

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> BenchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_server_args(parser: Any) -> None:
    """Options shared by the benchmarks that start a node."""
    parser.add_argument("--url", help="an already running node's ws:// URL (else one is started)")
    parser.add_argument("--secret", help="HS256 secret of --url's node (default: $CHAT_JWT_SECRET)")
    parser.add_argument(
        "--variant",
        metavar="ARGS",
        help="run the node with `python -m bench.serve_variant ARGS` instead of `chat serve` (e.g. \"--loop uvloop\")",
    )
    parser.add_argument("--server-pythonpath", metavar="DIR", help="prepended to the node's PYTHONPATH (e.g. where uvloop was pip-installed with --target)")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for the node (repeatable)")


@contextlib.contextmanager
def target_from_args(args: Any, *, env: Mapping[str, str] | None = None, name: str = "bench") -> Iterator[tuple[Target, BenchServer | None]]:
    """``--url`` given: use that server (its HS256 secret from ``--secret`` or ``CHAT_JWT_SECRET``).
    Otherwise start a node of our own (``chat serve``, or ``--variant``)."""
    url, secret = args.url, args.secret
    argv = None
    if args.variant is not None:
        argv = [sys.executable, "-m", "bench.serve_variant", *args.variant.split()]
    extra_env = dict(kv.split("=", 1) for kv in args.server_env)
    if url:
        secret = secret or os.environ.get("CHAT_JWT_SECRET")
        if not secret:
            raise SystemExit("--url needs the server's HS256 secret: --secret or CHAT_JWT_SECRET")
        yield Target(ws_url=url, secret=secret), None
        return
    server = BenchServer(env={**GENEROUS_LIMITS, **(env or {}), **extra_env}, name=name, argv=argv, extra_pythonpath=args.server_pythonpath).start()
    try:
        yield server.target, server
    finally:
        server.stop()


# Profiling (py-spy)


class PySpy:
    """``py-spy record`` on a process for ``seconds``; :meth:`summary` ranks functions.

    Raw (collapsed) stacks are kept in ``bench/results/<name>.pyspy.txt``: feed them to any
    flame-graph tool (e.g. speedscope, inferno)."""

    def __init__(self, pid: int, seconds: float, name: str, *, rate: int = 250) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy (not a project dependency)")
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.raw = RESULTS / f"{name}.pyspy.txt"
        self.cmd = [exe, "record", "-p", str(pid), "-d", str(int(math.ceil(seconds))), "-r", str(rate), "--threads", "--nonblocking", "-f", "raw", "-o", str(self.raw)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PySpy:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def wait(self, timeout: float = 60) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(10)

    def summary(self, top: int = 25) -> dict[str, Any]:
        return summarize_collapsed(self.raw, top=top)


_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    m = _FRAME_RE.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


# Leaf frames that mean "waiting", not working (py-spy's --nonblocking mode cannot always tell).
IDLE_LEAVES = ("EpollSelector.select ", "Condition.wait ", "Queue.get ", "Event.wait (threading", "_worker (concurrent")


def summarize_collapsed(path: Path, *, top: int = 25) -> dict[str, Any]:
    """Self and inclusive shares per function of the *working* samples (idle waits left out), per
    thread, from py-spy's raw output."""
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    idle = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        thread = frames[0]
        frames = [_short(f) for f in frames[1:]]
        if frames and frames[-1].startswith(IDLE_LEAVES):
            idle += count
            continue
        tname = re.sub(r"\(\d+\): ", "", re.sub(r" ?\(?0x[0-9a-f]+\)?", "", thread)).strip().strip('"') or thread
        threads[tname] = threads.get(tname, 0) + count
        total += count
        if frames:
            self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for f in set(frames):
            incl_counts[f] = incl_counts.get(f, 0) + count

    def ranked(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]] if total else []

    return {
        "samples_working": total,
        "samples_idle": idle,
        "threads_pct": {k: round(100 * v / total, 1) for k, v in sorted(threads.items(), key=lambda kv: -kv[1])} if total else {},
        "self_pct": ranked(self_counts),
        "inclusive_pct": ranked(incl_counts),
    }


def print_profile(summary: dict[str, Any], top: int = 15) -> None:
    print(f"  py-spy: {summary['samples_working']} working samples ({summary['samples_idle']} idle left out); by thread: {summary['threads_pct']}")
    print("  top self time:")
    for name, pct in summary["self_pct"][:top]:
        print(f"    {pct:5.1f}%  {name}")
    print("  top inclusive time:")
    for name, pct in summary["inclusive_pct"][:top]:
        print(f"    {pct:5.1f}%  {name}")


__all__ = [
    "BENCH_SECRET",
    "BenchServer",
    "CpuMeter",
    "GENEROUS_LIMITS",
    "Histogram",
    "PySpy",
    "SystemCpu",
    "Target",
    "add_server_args",
    "loadavg",
    "machine_info",
    "print_profile",
    "proc_cpu_s",
    "rss_kib",
    "target_from_args",
    "verdict",
    "wait_quiet",
    "write_result",
]
