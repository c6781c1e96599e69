"""What must hold before a node serves, each failure as one :class:`~chat.errors.StartupError`.

A node that cannot start says why on one line and exits with a code of its own
(:class:`~chat.errors.ExitCode`), instead of a traceback: the port is taken, another node uses
the data dir, or a backend cannot be reached.
"""

from __future__ import annotations

import errno
import socket

from chat.errors import ExitCode, StartupError


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
