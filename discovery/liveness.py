"""What is certainly known about a ZooKeeper session (pure: events in, answers out).

The server expires a session ``T`` (the negotiated session timeout) after it last
*heard* from the client, never earlier: ZooKeeper's expiry queue rounds expiry times
up. A response received on session ``S`` to a request sent at monotonic time ``t``
proves the server heard from ``S`` at some moment ``≥ t``, so ``S`` (and every
ephemeral znode it owns) cannot be gone before ``t + T``. That instant is
:attr:`Liveness.alive_until`; claims of ownership (worker IDs, leadership) hold only
until ``alive_until - margin``.

Why not trust the client's CONNECTED/SUSPENDED state instead: kazoo declares a
connection dead only after ``2T/3`` of silence, and it sees expiry only after it
reconnects; a paused process (GC, SIGSTOP) sees nothing at all. A deadline on the
monotonic clock is right in all three cases. The margin absorbs clock-rate
differences between this host and the server (NTP slews ≤ 0.05 %) with plenty to
spare.
"""

from __future__ import annotations

NEVER = float("-inf")


class Liveness:
    """Tracks the session the server last answered on and until when it is certainly alive."""

    __slots__ = ("_answered", "_lost", "alive_until", "last_good", "session_id", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        # The live session that answered last; None before the first answer and after LOST.
        self.session_id: int | None = None
        # Monotonic instant before which the server cannot have expired the last answered session
        # (kept after LOST, so a lease can tell when its claim really ended).
        self.alive_until = NEVER
        # Send time of the newest request answered on that session (the last known-good moment).
        self.last_good = NEVER
        # The session timeout the server negotiated (the requested one until it is known).
        self.timeout_s = timeout_s
        self._answered: int | None = None  # the session alive_until belongs to
        self._lost: int | None = None  # a session declared lost: late answers on it prove nothing

    def on_response(self, session_id: int, sent_at: float) -> None:
        """A request sent at ``sent_at`` was answered on ``session_id``.

        A newer session replaces an older one: it was created after ``sent_at`` was
        read, so it too is alive until at least ``sent_at + T``.
        """
        if session_id == self._lost:
            return
        if session_id != self._answered:
            self._answered = session_id
            self.alive_until = NEVER
            self.last_good = NEVER
        self.session_id = session_id
        if sent_at > self.last_good:
            self.last_good = sent_at
            self.alive_until = sent_at + self.timeout_s

    def set_timeout(self, timeout_s: float) -> None:
        """The server negotiated ``timeout_s`` for the session (it may differ from the request)."""
        self.timeout_s = timeout_s
        if self.last_good != NEVER:
            self.alive_until = self.last_good + timeout_s

    def on_lost(self) -> None:
        """The session expired or was closed: nothing is known to be alive any more."""
        if self.session_id is not None:
            self._lost = self.session_id
        self.session_id = None

    def deadline_of(self, session_id: int | None) -> float:
        """Until when ``session_id`` was (or is) certainly alive; -inf if nothing is known."""
        return self.alive_until if session_id is not None and session_id == self._answered else NEVER

    def certainly_alive(self, session_id: int | None, now: float, margin_s: float) -> bool:
        """True while ``session_id`` cannot have expired on the server, ``margin_s`` to spare."""
        return session_id is not None and session_id == self.session_id and now < self.alive_until - margin_s
