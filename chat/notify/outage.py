"""Logging a dependency that fails: one warning when an outage starts, one line when it ends.

Not one line per failure: a webhook that is down for an hour is retried thousands of times and
must not flood the log (which may share its disk with the data). Failures inside an outage go
to debug. A dependency that flaps (fails, recovers, fails …) gets at most one warning per
``quiet_s``; the recoveries in between go to debug too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Outage:
    """The state of one dependency's failures, for its log lines."""

    def __init__(self, what: str, log: logging.Logger, *, quiet_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._what = what  # names the dependency in every line (never a secret or a full URL)
        self._log = log
        self._quiet_s = quiet_s
        self._clock = clock
        self.since: float | None = None  # monotonic start of the current outage
        self.failures = 0  # failures in the current outage
        self._warned_at = float("-inf")  # when the last warning went out

    def failed(self, detail: str, consequence: str) -> None:
        """One failure; ``consequence`` says what happens now (e.g. "retrying with backoff")."""
        now = self._clock()
        self.failures += 1
        if self.since is not None:
            self._log.debug("%s still failing: %s", self._what, detail)
            return
        self.since = now
        if now - self._warned_at >= self._quiet_s:
            self._warned_at = now
            self._log.warning("%s failing: %s; %s (logged again when it recovers)", self._what, detail, consequence)
        else:
            self._log.debug("%s failing again: %s", self._what, detail)

    def recovered(self) -> None:
        """A success: ends the outage, if there was one."""
        if self.since is None:
            return
        warned = self._warned_at >= self.since  # this outage's start was a warning: so is its end
        elapsed, failures = self._clock() - self.since, self.failures
        self.since, self.failures = None, 0
        self._log.log(logging.INFO if warned else logging.DEBUG, "%s answering again after %.1f s (%d failed attempts)", self._what, elapsed, failures)
