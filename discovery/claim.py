"""A claim (a worker ID, leadership) that holds only while its ZooKeeper session certainly lives.

:meth:`SessionClaim.valid` is True while the claim's session is the connection's current one
and cannot have expired on the server yet, with ``margin`` to spare (see
:mod:`discovery.liveness`): the server hands the claimed znode to nobody else before the
session expires, so two holders are never valid at the same time.

Once the deadline passes unnoticed by any answer, the claim *lapses* and stays lapsed
until :meth:`confirm` sees a request answered on the claim's session again: a claim never
comes back silently. A loop timer notices the lapse and calls ``on_lapse(at)`` with the
instant it took effect (the deadline), so listeners hear of it promptly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from discovery.zk import ZkConnection

NEVER = float("-inf")


class SessionClaim:
    def __init__(self, conn: ZkConnection, margin_fraction: float, on_lapse: Callable[[float], None]) -> None:
        if not 0 < margin_fraction < 0.8:
            raise ValueError("margin_fraction must be in (0, 0.8): the heartbeat needs room to extend the deadline")
        self._conn = conn
        self._margin_fraction = margin_fraction
        self._on_lapse = on_lapse  # told when validity ran out without an answer
        self.session: int | None = None  # the session the claim lives on; None: nothing claimed
        self.lapsed = False
        self._timer: asyncio.TimerHandle | None = None

    @property
    def margin_s(self) -> float:
        """How long before the session could expire on the server the claim stops being valid."""
        return self._margin_fraction * self._conn.session_timeout_s

    def valid(self) -> bool:
        """O(1), no I/O."""
        session = self.session
        return session is not None and not self.lapsed and self._conn.certainly_alive(session, self._margin_fraction * self._conn.session_timeout_s)

    def valid_until(self) -> float:
        """Monotonic instant the claim stops being valid unless ZooKeeper answers again."""
        if self.session is None or self.lapsed or self._conn.session_id != self.session:
            return NEVER
        return self._conn.alive_until - self.margin_s

    def hold(self, session: int) -> None:
        """The claim now lives on ``session`` (a request on it was just answered)."""
        self.session = session
        self.lapsed = False
        self._arm()

    def confirm(self, answered_on: int | None) -> bool:
        """A request was answered on ``answered_on``: lift a lapse if it is the claim's session."""
        if self.session is not None and answered_on == self.session and self.lapsed:
            self.lapsed = False
            self._arm()
            return True
        return False

    def release(self) -> float:
        """Drop the claim; returns when validity really ended (now, or the deadline if it ran out unnoticed)."""
        ended = time.monotonic() if self.valid() else min(time.monotonic(), self._conn.deadline_of(self.session) - self.margin_s)
        self.session = None
        self.lapsed = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return ended

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        # The loop's clock is time.monotonic, like the deadline.
        self._timer = asyncio.get_running_loop().call_at(self._conn.alive_until - self.margin_s, self._check)

    def _check(self) -> None:
        self._timer = None
        if self.session is None or self.lapsed:
            return
        if self.valid():  # answers moved the deadline on meanwhile
            self._arm()
            return
        self.lapsed = True
        self._on_lapse(self._conn.deadline_of(self.session) - self.margin_s)
