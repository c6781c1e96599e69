"""One shared writer for every socket on the direct path: frames queued during a loop turn
(or, under load, a few milliseconds) leave in one ``write`` per socket."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger(__name__)

#: Under fan-out load, writes to one socket are at least this far apart.
FLUSH_WINDOW_S = 0.004
#: A run that wrote to at least this many sockets is fan-out load: the next run waits for the
#: window. Smaller runs (acks, replies, DMs, small groups) never make the next one wait, so a
#: sender's ack is not held back to batch writes that gain nothing from it.
FLUSH_BUSY_SOCKETS = 32


class Writable(Protocol):
    def write_now(self) -> None:
        """Write what is queued, in one go."""


class Flusher:
    """Writes every direct session that was given frames, in one ``write`` each, shared by all.

    Fan-out only queues; the writes happen here, after the loop turn's callbacks, so every frame a
    socket got in that turn leaves in one write. Under load it also waits: a run that follows the
    previous busy one (``busy_sockets`` or more written) within ``window_s`` is held until the
    window has passed, so a busy room's messages of a few milliseconds share one write per
    socket — the cost per delivery falls as the rate rises, and no frame waits more than
    ``window_s``. An idle node, and one that only answers a few sockets at a time, writes at once.
    """

    def __init__(self, *, window_s: float = FLUSH_WINDOW_S, busy_sockets: int = FLUSH_BUSY_SOCKETS) -> None:
        self._dirty: list[Writable] = []
        self._scheduled = False
        self._window_s = window_s
        self._busy_sockets = busy_sockets
        self._last_run = float("-inf")

    def mark(self, session: Writable) -> None:
        self._dirty.append(session)
        if not self._scheduled:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            wait_s = self._last_run + self._window_s - loop.time()
            if wait_s > 0:
                loop.call_later(wait_s, self._run)
            else:
                loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        if len(dirty) >= self._busy_sockets:
            self._last_run = asyncio.get_running_loop().time()
        for session in dirty:
            try:
                session.write_now()
            except Exception:  # one socket's bug must not strand the others
                # The rest of this run were taken off the list and stay marked: without this
                # they would never be written again.
                log.exception("writing to a socket failed")
