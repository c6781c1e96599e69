"""What must hold before a node serves, each failure as one :class:`~chat.errors.StartupError`.

A node that cannot start says why on one line and exits with a code of its own
(:class:`~chat.errors.ExitCode`), instead of a traceback: the port is taken
(:func:`bind_listener`), another node uses the data dir (discovery's lock on it), or a backend
cannot be reached (the app's lifespan runs each backend's start in a :func:`step`).
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import AsyncIterator

from chat.errors import ChatError, ExitCode, StartupError
from discovery.errors import DataDirInUse, DiscoveryError


def bind_listener(host: str, port: int) -> socket.socket:
    """The node's listening socket, bound (uvicorn listens on it once the app has started, so
    clients are refused rather than queued while the node connects to its backends)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: accepted sockets inherit it, and asyncio sets TCP_NODELAY only on
    # sockets whose proto says TCP (with proto 0, Nagle and delayed ACKs add ~40 ms per reply).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
    driver errors into ``Unavailable`` —, ``DiscoveryError`` or ``OSError``) becomes a
    :class:`StartupError` that says ``what`` could not be done; a data dir that another node
    holds is :attr:`ExitCode.DATA_DIR` whatever the step. Anything else is a bug and keeps its
    traceback."""
    try:
        yield
    except DataDirInUse as exc:
        raise StartupError(ExitCode.DATA_DIR, f"the {exc.message}: give each node its own CHAT_DATA_DIR") from exc
    except (ChatError, DiscoveryError, OSError) as exc:
        reason = exc.message if isinstance(exc, ChatError | DiscoveryError) else (exc.strerror or str(exc))
        raise StartupError(exit_code, f"{what}: {reason}") from exc
