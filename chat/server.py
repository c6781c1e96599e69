"""Running a node under uvicorn with our own shutdown: SIGTERM drains and exits 0.

uvicorn's own shutdown closes WebSockets with 1012 and re-raises the signal after a
graceful stop (so the process would die by signal). We install our own handlers: the
first SIGTERM/SIGINT stops accepting, drains the node (``reconnect`` hints, close 1001,
flush) and then lets uvicorn finish; a second one forces exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
import sys
import threading
from collections.abc import Generator
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chat import logfilters
from chat.config import Settings
from chat.errors import ExitCode, StartupError
from chat.fds import FdReserve
from chat.listener import GuardedWebSocketProtocol, http_protocol
from chat.node import Node
from chat.startup import bind_listener

log = logging.getLogger(__name__)


class ChatServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, node: Node, *, reserve: FdReserve | None = None) -> None:
        super().__init__(config)
        self.node = node
        self._reserve = reserve
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        if self._reserve is not None:
            self._reserve.install(self._loop)
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # uvicorn says where it listens only for sockets it bound itself
            for sock in sockets or ():
                host, port = sock.getsockname()[:2]
                log.info("listening on http://%s:%d", f"[{host}]" if ":" in host else host, port)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGTERM, signal.SIGINT)
        original = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self._loop is None:
            self.force_exit = True
            self.should_exit = True
            return
        log.info("received %s: draining", signal.Signals(sig).name)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        for server in self.servers:
            server.close()  # stop accepting: new connections are refused at the socket
        try:
            await asyncio.wait_for(self.node.drain(), self.node.settings.drain_grace_s + 5)
        except Exception:
            log.exception("drain did not finish cleanly")
        self.should_exit = True


def uvicorn_config(app: ASGIApp, settings: Settings, *, log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # websockets-sansio with a direct write path (chat/wsproto.py) that answers and closes a
        # refused handshake (chat/listener.py)
        ws=GuardedWebSocketProtocol,
        # Off: deflate costs tens of KiB per socket and would force one encode per recipient.
        ws_per_message_deflate=False,
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=settings.ping_interval_s,
        ws_ping_timeout=settings.ping_timeout_s,
        http=http_protocol(handshake_timeout_s=settings.handshake_timeout_s),
        lifespan="on",
        log_level=log_level,
        # Not uvicorn's own handlers: its loggers propagate to the node's one handler and format
        # (chat/logsetup.py). Requests are logged by chat/accesslog.py (CHAT_ACCESS_LOG).
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_grace_s) + 5,
        backlog=4096,
    )


def run(app: Starlette, settings: Settings, *, log_level: str = "info") -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code (0 after a clean drain).

    Raises :class:`StartupError` (one line, an exit code of its own) when the node cannot start.
    """
    raise_fd_limit()
    listener = bind_listener(settings.host, settings.port)
    reporter = StartupReporter(app)
    config = uvicorn_config(reporter, settings, log_level=log_level)
    logfilters.install(access_log=settings.access_log)  # after Config: it (re)configures uvicorn's loggers
    reserve = FdReserve([listener])
    server = ChatServer(config, app.state.parts.node, reserve=reserve)
    try:
        server.run(sockets=[listener])
    except SystemExit:  # uvicorn's way out when the app's startup failed
        if server.started:
            raise
    finally:
        reserve.close()
    if reporter.failure is not None:
        raise reporter.failure
    if not server.started:
        raise StartupError(ExitCode.FAILED, "the node did not start (the log above says why)")
    return ExitCode.OK


def raise_fd_limit() -> None:
    """Every socket is a file descriptor: take the soft limit up to the hard one (a container
    runtime's default soft limit, often 1,024, would otherwise cap a node's connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)


class StartupReporter:
    """The app as uvicorn runs it: a :class:`StartupError` raised while the lifespan starts is
    kept (for its line and exit code) and not handed to uvicorn, which would log the traceback
    Starlette made of it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.failure: StartupError | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def report(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                # Starlette sends this from the `except` block of the failed start.
                error = sys.exc_info()[1]
                if isinstance(error, StartupError):
                    self.failure = error
                    message = {**message, "message": ""}
            await send(message)

        await self.app(scope, receive, report)
