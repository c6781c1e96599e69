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
import re
import signal
import socket
import threading
from collections.abc import Generator
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from chat.config import Settings
from chat.node import Node
from chat.wsproto import DirectSocket

log = logging.getLogger(__name__)


_TOKEN_IN_URL = re.compile(r"(token=)[^&\s\"]+")


class RedactingFilter(logging.Filter):
    """Keeps tokens out of uvicorn's log lines (browsers pass them as ``?token=``), and drops
    a false error uvicorn's sans-I/O WebSocket logs after an HTTP denial response."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "ASGI callable returned without completing handshake.":
            return False
        if record.args:
            record.args = tuple(_TOKEN_IN_URL.sub(r"\1<redacted>", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = _TOKEN_IN_URL.sub(r"\1<redacted>", record.msg)
        return True


def install_log_redaction() -> None:
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(RedactingFilter())


class ChatServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, node: Node) -> None:
        super().__init__(config)
        self.node = node
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

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


def uvicorn_config(app: Starlette, settings: Settings, *, log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws=DirectSocket,  # websockets-sansio with a direct write path (chat/wsproto.py)
        # Off: deflate costs tens of KiB per socket and would force one encode per recipient.
        ws_per_message_deflate=False,
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=settings.ping_interval_s,
        ws_ping_timeout=settings.ping_timeout_s,
        http="httptools",
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_grace_s) + 5,
        backlog=4096,
    )


def run(app: Starlette, settings: Settings, *, log_level: str = "info") -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code (0 after a clean drain)."""
    config = uvicorn_config(app, settings, log_level=log_level)
    install_log_redaction()  # after Config: it (re)configures uvicorn's loggers
    server = ChatServer(config, app.state.parts.node)
    server.run()
    return 0 if server.started else 1
