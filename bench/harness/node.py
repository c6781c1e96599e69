"""The node under test: ``python -m chat serve`` configured by ``CHAT_*`` variables, or one
already running (``--url``).

Only the product's public surfaces are used: the process and its environment, ``/readyz``, the
HTTP API (channels) and tokens from ``chat.auth.issue_token``. That is also what lets
``bench.compare`` start a node from any commit's tree (``--checkout``): the server imports the
``chat`` package of its working directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from bench.harness.measure import ROOT, parse_cpus
from chat.auth import issue_token
from chat.config import Settings, from_env

BENCH_SECRET = "bench-secret-" + "b" * 40
# Generous per-socket limits: the benchmarks measure the message path, not the limiter.
GENEROUS_LIMITS = {
    "CHAT_RATE_PER_S": "1000000",
    "CHAT_RATE_BURST": "1000000",
    "CHAT_FLOOD_STRIKES": "1000000",
    # Per user and per address (older commits ignore these): the load comes from one address and few users.
    "CHAT_USER_SEND_PER_S": "1000000",
    "CHAT_USER_SEND_BURST": "1000000",
    "CHAT_USER_MAX_SOCKETS": "1000000",
    "CHAT_HANDSHAKE_PER_S": "1000000",
    "CHAT_HANDSHAKE_BURST": "1000000",
    # Adding others to channels: one user builds every fan-out room, members by the thousand.
    "CHAT_ADD_OTHERS_PER_MIN": "1000000",
    "CHAT_ADD_OTHERS_BURST": "1000000",
    "CHAT_ADDED_BY_OTHERS_PER_DAY": "1000000",
}


@dataclass
class Target:
    """Where the load goes: a node this run started, or one given with ``--url``."""

    ws_url: str
    secret: str
    audience: str = "chat"
    pid: int | None = None  # known only for a node we started (CPU, RSS, profiles)
    _settings: Settings = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Settings only to mint tokens the node accepts; CHAT_NODE_ID keeps the hostname out of it.
        self._settings = from_env({"CHAT_JWT_SECRET": self.secret, "CHAT_JWT_AUDIENCE": self.audience, "CHAT_NODE_ID": "bench"})

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
        return issue_token(self._settings, user, ttl_s=ttl_s)

    def ws_path_for(self, user: str) -> str:
        """The WebSocket path with ``user``'s token in the query."""
        return f"{self.ws_path}?token={self.token(user)}"

    def http(self, user: str) -> httpx.Client:
        return httpx.Client(base_url=self.http_url, headers={"Authorization": f"Bearer {self.token(user)}"}, timeout=30)

    def create_channel(self, creator: str, kind: str, name: str, members: list[str]) -> str:
        """``POST /v1/channels``; returns the new channel's ID."""
        with self.http(creator) as client:
            r = client.post("/v1/channels", json={"kind": kind, "name": name, "members": members})
            r.raise_for_status()
            return str(r.json()["channel"]["id"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """``python -m chat serve`` in a subprocess with a fresh data dir on disk (fsync is real),
    its working directory at ``checkout`` (whose ``chat`` package it runs), optionally pinned to
    ``cpus`` with ``taskset``. Ready when ``/readyz`` answers 200."""

    def __init__(
        self, *, env: Mapping[str, str] | None = None, name: str = "bench", checkout: Path = ROOT, cpus: str | None = None
    ) -> None:
        self.port = free_port()
        self.checkout = checkout
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
        # taskset execs the server, so the pid we hold is the server's own.
        self.argv = [*(["taskset", "-c", cpus] if cpus else []), sys.executable, "-m", "chat", "serve"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "server.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "node not started"
        return self.proc.pid

    @property
    def target(self) -> Target:
        return Target(ws_url=f"ws://127.0.0.1:{self.port}/v1/ws", secret=self.env["CHAT_JWT_SECRET"], pid=self.pid)

    def start(self, timeout_s: float = 30.0) -> Self:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.checkout, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return self
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.1)  # the poll interval, ended early if the server exits
                break
        self.stop()
        raise RuntimeError(f"node did not become ready within {timeout_s:.0f}s:\n{self.log_tail()}")

    def log_lines(self) -> list[str]:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace").splitlines()
        return []

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_lines()[-n:])

    def log_warnings(self) -> dict[str, Any]:
        """What the node logged at WARNING or above (e.g. a relay outage: stored, not delivered live)."""
        bad = [ln for ln in self.log_lines() if " WARNING " in ln or " ERROR " in ln]
        return {"warnings_and_errors": len(bad), "samples": [ln[-200:] for ln in bad[:5]]}

    def stop(self) -> None:
        """SIGTERM (the node drains), bounded; then the data dir goes."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_node_args(parser: argparse.ArgumentParser, *, url: bool = True) -> None:
    """Options of every benchmark that loads a node."""
    if url:
        parser.add_argument("--url", help="load an already running node at this ws:// URL instead of starting one")
        parser.add_argument("--secret", help="HS256 secret of --url's node (default: $CHAT_JWT_SECRET)")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="source tree whose `chat` the started node runs (default: this one)")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for the node (repeatable)"
    )
    parser.add_argument("--server-cpus", metavar="LIST", help="pin the node to these CPUs (taskset list, e.g. 0)")
    parser.add_argument("--client-cpus", metavar="LIST", help="pin the load generator (this process and its workers) to these CPUs, e.g. 1")
    parser.add_argument("--profile", action="store_true", help="py-spy the node during the measured window (pip install py-spy)")
    parser.add_argument(
        "--scrape-s",
        type=float,
        default=0.0,
        metavar="S",
        help="GET /metrics from the node every S seconds while it runs, as Prometheus would (0: never; a node without /metrics answers 404)",
    )


def server_env(args: argparse.Namespace) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in args.server_env)


def pin_client(args: argparse.Namespace) -> None:
    """Pin this process before it spawns its workers: children inherit the affinity."""
    if args.client_cpus:
        os.sched_setaffinity(0, parse_cpus(args.client_cpus))


@contextlib.contextmanager
def node_from_args(
    args: argparse.Namespace, *, env: Mapping[str, str] | None = None, name: str = "bench"
) -> Iterator[tuple[Target, Node | None]]:
    """``--url`` given: that node (tokens signed with ``--secret`` or ``$CHAT_JWT_SECRET``).
    Otherwise a node of our own, with generous rate limits, ``env`` and ``--server-env``."""
    pin_client(args)
    if getattr(args, "url", None):
        secret = args.secret or os.environ.get("CHAT_JWT_SECRET")
        if not secret:
            raise SystemExit("--url needs the node's HS256 secret: --secret or CHAT_JWT_SECRET")
        yield Target(ws_url=args.url, secret=secret), None
        return
    node = Node(env={**GENEROUS_LIMITS, **(env or {}), **server_env(args)}, name=name, checkout=args.checkout, cpus=args.server_cpus)
    with node:
        scraper = Scraper(node.target.http_url + "/metrics", getattr(args, "scrape_s", 0.0))
        try:
            yield node.target, node
        finally:
            scraper.stop()


class Scraper:
    """A thread that GETs ``url`` every ``interval_s`` (none for 0), so a run pays what a
    Prometheus scrape costs the node; says how it went when stopped."""

    def __init__(self, url: str, interval_s: float) -> None:
        self._url = url
        self._interval_s = interval_s
        self._done = threading.Event()
        self.statuses: dict[int, int] = {}
        self.seconds: list[float] = []
        self._thread = threading.Thread(target=self._run, name="metrics-scraper", daemon=True) if interval_s > 0 else None
        if self._thread is not None:
            self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._done.wait(self._interval_s):
                started = time.perf_counter()
                try:
                    status = client.get(self._url).status_code
                except httpx.HTTPError:
                    status = 0
                self.seconds.append(time.perf_counter() - started)
                self.statuses[status] = self.statuses.get(status, 0) + 1

    def stop(self) -> None:
        if self._thread is None:
            return
        self._done.set()
        self._thread.join(15)
        median_ms = statistics.median(self.seconds) * 1000 if self.seconds else 0.0
        count = len(self.seconds)
        print(f"scraped {self._url} {count} times every {self._interval_s:g} s: statuses {self.statuses}, median {median_ms:.1f} ms", file=sys.stderr)
