"""Running out of file descriptors without going deaf or flooding the log.

When every descriptor is taken, ``accept()`` fails with EMFILE. asyncio (3.11) then logs a full
traceback through the loop's exception handler for every attempt (its accept loop tries up to
``backlog`` times per wake-up, and retries a second later): ~200,000 lines in 20 s. Meanwhile
the waiting connections stay in the kernel's backlog, so when descriptors free up the node
first accepts whatever an attacker left queued, and ``/healthz`` waits behind it.

:class:`FdReserve` holds one spare descriptor. Installed as the loop's exception handler, it
takes over exactly that failure for our listening socket: it releases the spare, takes one
waiting connection off the backlog, answers it 503 ``unavailable`` and closes it, and takes the
spare back. So the backlog drains instead of filling, every client gets an answer at once, and
as soon as sockets close (the handshake timeout closes idle ones) new connections, health checks
included, are accepted again. It logs one line per interval, not one per attempt.

Relies on asyncio's ``'socket.accept() out of system resource'`` exception-handler call: its
context holds the OSError as ``exception`` and the listening socket as ``socket`` (checked by
tests/unit/test_listener.py, and for real by tests/e2e/test_handshake_limits.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
from typing import Any

from chat.errors import Unavailable
from chat.listener import raw_response
from chat.ratelog import OncePerInterval

log = logging.getLogger(__name__)

_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)


class FdReserve:
    """A spare descriptor that lets the node answer (and shed) connections when it has none left."""

    def __init__(self, listeners: list[socket.socket], *, log_interval_s: float = 10.0) -> None:
        # Only failures on these sockets are ours to handle; anything else goes to the default handler.
        self._listeners = {sock.fileno(): sock for sock in listeners}
        self._spare = self._take_spare()
        self._answer = raw_response(Unavailable("this node is out of connections; try again shortly", retry_after_ms=1000))
        self._log_gate = OncePerInterval(interval_s=log_interval_s)
        self.shed = 0  # connections answered 503 and closed so far

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle the loop's accept failures for lack of descriptors (everything else as before)."""
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if not self.handle(context):
                if previous is not None:
                    previous(loop, context)
                else:
                    loop.default_exception_handler(context)

        loop.set_exception_handler(handler)

    def handle(self, context: dict[str, Any]) -> bool:
        """Deal with an exception-handler ``context``; False if it is not an accept failure of ours."""
        error = context.get("exception")
        sock = context.get("socket")
        if not isinstance(error, OSError) or error.errno not in _OUT_OF_FDS or sock is None:
            return False
        listener = self._listeners.get(sock.fileno())
        if listener is None:
            return False
        shed = self._shed_one(listener)
        self._log_gate.log(
            log,
            logging.WARNING,
            "out of file descriptors (limit %d): accepting paused for 1 s; %s",
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "answered a waiting connection 503" if shed else "no waiting connection to answer",
        )
        return True

    def _shed_one(self, listener: socket.socket) -> bool:
        if self._spare < 0:  # a thread took the descriptor we released last time
            self._spare = self._take_spare()
            if self._spare < 0:
                return False
        os.close(self._spare)
        self._spare = -1
        try:
            conn, _ = listener.accept()
        except OSError:  # nothing waiting (EAGAIN), or the descriptor went elsewhere meanwhile
            conn = None
        if conn is not None:
            self._answer_and_close(conn)
        self._spare = self._take_spare()
        return conn is not None

    def _answer_and_close(self, conn: socket.socket) -> None:
        try:
            conn.setblocking(False)
            try:
                conn.recv(65536)  # read the request, so the close is a FIN and the client reads the answer
            except OSError:
                pass
            conn.send(self._answer)
        except OSError:
            pass
        finally:
            conn.close()
        self.shed += 1

    @staticmethod
    def _take_spare() -> int:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return -1

    def close(self) -> None:
        if self._spare >= 0:
            os.close(self._spare)
            self._spare = -1
