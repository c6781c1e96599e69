"""Log lines that outsiders can trigger, at most once per interval.

A client can make the node refuse its requests as fast as it can send them (bad handshakes,
invalid UTF-8, a flood of connections past the file-descriptor limit). One log line per
refusal would let it fill the disk and bury everything else; :class:`OncePerInterval` logs the
first at once and then one line per interval saying how many happened meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class OncePerInterval:
    """One log line per ``interval_s`` for a recurring event, with the count since the last line."""

    __slots__ = ("_logger", "_level", "_interval_s", "_clock", "_count", "_next_at")

    def __init__(self, logger: logging.Logger, *, level: int = logging.WARNING, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._level = level
        self._interval_s = interval_s
        self._clock = clock  # injected so tests step time instead of sleeping
        self._count = 0  # events since the last line (the one that logs included)
        self._next_at = float("-inf")  # no line before this

    def __call__(self, message: str, *args: object) -> bool:
        """Count one event; log ``message % args`` if the interval has passed. True if logged."""
        self._count += 1
        now = self._clock()
        if now < self._next_at:
            return False
        if self._count > 1:
            message += f" ({self._count} times since the last such line)"
        self._logger.log(self._level, message, *args)
        self._count = 0
        self._next_at = now + self._interval_s
        return True
