"""The LeaderElection port: at most one node of the cluster runs a singleton task at a time.

Contract (both adapters):
- :meth:`LeaderElection.start` joins the election and returns once the first outcome is
  known (bounded); :meth:`LeaderElection.close` resigns at once (idempotent).
- :attr:`LeaderElection.is_leader` is O(1) with no I/O. The ZooKeeper adapter gives
  leadership up the moment the connection is SUSPENDED, and in any case before its
  session could have expired on the server, so two nodes never both believe they lead;
  when the leader dies, another participant takes over within the session timeout.
- Listeners hear every change of :attr:`is_leader` (True/False) on the event loop.
  A singleton task should check :attr:`is_leader` before each unit of work rather than
  trust a value read long ago.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class LeaderElection(Protocol):
    @property
    def is_leader(self) -> bool:
        """True while this node certainly leads."""

    async def start(self) -> None:
        """Join the election (bounded)."""

    async def close(self) -> None:
        """Resign and stop (idempotent)."""

    def subscribe(self, callback: Callable[[bool], None]) -> Callable[[], None]:
        """Call ``callback(is_leader)`` on the loop at each change; returns an unsubscribe function."""
