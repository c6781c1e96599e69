"""What must hold before a node serves, each failure as one :class:`~chat.errors.StartupError`.

A node that cannot start says why on one line and exits with a code of its own
(:class:`~chat.errors.ExitCode`), instead of a traceback: the port is taken
(:func:`bind_listener`), another node uses the data dir (:func:`lock_data_dir`), or a backend
cannot be reached (the app's lifespan runs each backend's start in a :func:`step`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from chat.errors import ChatError, ExitCode, StartupError

log = logging.getLogger(__name__)

LOCK_FILE = "node.lock"  # in the data dir of a node on the embedded (SQLite) store


def bind_listener(host: str, port: int) -> socket.socket:
    """The node's listening socket, bound (uvicorn listens on it once the app has started, so
    clients are refused rather than queued while the node connects to its backends)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(ExitCode.PORT_IN_USE, f"port {port} on {host} is in use (another node?); set CHAT_PORT or stop it") from None
        raise StartupError(ExitCode.PORT_IN_USE, f"cannot listen on {host}:{port} (CHAT_HOST, CHAT_PORT): {exc.strerror or exc}") from None
    return sock


@contextlib.asynccontextmanager
async def step(exit_code: ExitCode, what: str) -> AsyncIterator[None]:
    """A step of the app's start: a backend's failure in it (``ChatError`` — the adapters turn
    driver errors into ``Unavailable`` — or ``OSError``) becomes a :class:`StartupError` that
    says ``what`` could not be done. Anything else is a bug and keeps its traceback."""
    try:
        yield
    except (ChatError, OSError) as exc:
        reason = exc.message if isinstance(exc, ChatError) else (exc.strerror or str(exc))
        raise StartupError(exit_code, f"{what}: {reason}") from exc


def lock_data_dir(data_dir: Path) -> int | None:
    """Hold an exclusive lock on the data dir for this process's life (its descriptor, or None).

    Two nodes on one SQLite file would each think their writes are the only ones; the second to
    start is refused. A disk that is full or read-only does not keep the node from starting (it
    serves reads there): if the lock file cannot be created, the node starts without it.
    """
    path = data_dir / LOCK_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("cannot lock the data dir %s (%s): nothing keeps a second node from using it", data_dir, exc.strerror)
            return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        by = f" by pid {holder}" if holder else ""
        raise StartupError(ExitCode.DATA_DIR, f"the data dir {data_dir.resolve()} is in use{by}: give each node its own CHAT_DATA_DIR") from None
    try:  # who holds it, for the message above (best effort: the disk may be full)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    return fd


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isascii() and text.isdigit() else ""
