"""A real ``chat serve`` process for end-to-end tests."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from chat.auth import issue_token
from chat.config import from_env

TEST_SECRET = "test-secret-" + "x" * 40
READY_LINE = "listening on http://"  # logged once the node accepts connections (startup-complete comes earlier)


# Every process started and not yet reaped: killed when the test run ends, so a test that
# fails before its own cleanup never leaves a node running (and holding ports and znodes).
_RUNNING: set[subprocess.Popen[str]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_RUNNING):
        if proc.poll() is None:
            proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m chat serve`` on a free port; its output is captured and searchable."""

    def __init__(self, data_dir: Path, *, env: Mapping[str, str] | None = None, port: int | None = None, max_fds: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.max_fds = max_fds  # RLIMIT_NOFILE of the process (None: inherited)
        self.env = {
            **os.environ,
            "CHAT_HOST": "127.0.0.1",
            "CHAT_PORT": str(self.port),
            "CHAT_DATA_DIR": str(data_dir),
            "CHAT_JWT_SECRET": TEST_SECRET,
            "CHAT_NODE_ID": f"test-{self.port}",
            "CHAT_DRAIN_GRACE_S": "2",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._cond = threading.Condition()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def settings(self):
        return from_env({k: v for k, v in self.env.items() if k.startswith("CHAT_")})

    def token(self, user: str, **kwargs) -> str:
        return issue_token(self.settings(), user, **kwargs)

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        self.lines = []
        # prlimit (util-linux) rather than a preexec_fn: forking a threaded process runs no Python after it.
        limit = [] if self.max_fds is None else ["prlimit", f"--nofile={self.max_fds}:{self.max_fds}", "--"]
        self.proc = subprocess.Popen(
            [*limit, sys.executable, "-m", "chat", "serve"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        _RUNNING.add(self.proc)
        threading.Thread(target=self._pump, daemon=True).start()
        if not self.wait_for_line(READY_LINE, timeout_s):
            self.kill()
            raise RuntimeError("server did not start:\n" + "\n".join(self.lines[-40:]))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for_line(self, needle: str, timeout_s: float) -> bool:
        """Block until a log line contains ``needle`` (or the process ends / time runs out)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if any(needle in line for line in self.lines):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    return any(needle in line for line in self.lines)
                self._cond.wait(min(remaining, 0.5))

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None:
            _RUNNING.discard(self.proc)

    def http(self, user: str | None = None, token: str | None = None) -> httpx.Client:
        headers = {}
        if user is not None or token is not None:
            headers["Authorization"] = f"Bearer {token or self.token(user)}"  # type: ignore[arg-type]
        return httpx.Client(base_url=self.http_url, headers=headers, timeout=10)
