"""The PresenceStore port: every device's last heartbeat, shared by all nodes that use the store.

The rules are those of :mod:`presence.state` (the in-memory adapter *is* that state; the Redis
adapter runs the same rules in atomic scripts), checked for both by one contract suite
(tests/contract/test_presence_store.py):

* :meth:`PresenceStore.apply` records a batch of heartbeats and clean closes **in order and
  atomically per event**, in **one round trip**, and returns the transitions they caused. Every
  transition is returned to exactly one caller in the cluster: the one whose write caused it.
* :meth:`PresenceStore.expire` removes devices whose deadline (last heartbeat + ``timeout_ms``)
  is before ``now``, at most ``limit`` per call, in O(expired) (a sorted set of deadlines, not a
  scan); only the sweeper (one leader per cluster) calls it.
* :meth:`PresenceStore.query` and :meth:`PresenceStore.online_among` read in one round trip:
  a user is online iff a device is recorded (so a dropped device reads online until the sweep
  after its deadline, and queries agree with the transitions pushed).
* ``last_seen`` of an offline user is kept for ``retention_ms`` (30 days by default).
* Failures (the store unreachable, no reply in time) raise :class:`PresenceUnavailable` within
  the adapter's timeouts; a batch whose reply was lost may or may not have been applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from presence.state import DeviceEvent, Expiry, OnlineSample, Transition, UserPresence

__all__ = ["DeviceEvent", "Expiry", "OnlineSample", "PresenceStore", "PresenceUnavailable", "Transition", "UserPresence"]


class PresenceUnavailable(Exception):
    """The store did not answer (in time); the message never holds credentials."""


class PresenceStore(Protocol):
    """Where presence lives (see the module docstring for the contract)."""

    @property
    def timeout_ms(self) -> int:
        """A device is live while its last heartbeat is at most this old."""
        ...

    async def apply(self, events: Sequence[DeviceEvent]) -> list[Transition]:
        """Record heartbeats and clean closes in order, in one round trip; the transitions caused."""
        ...

    async def expire(self, now_ms: int, limit: int) -> Expiry:
        """Remove up to ``limit`` devices past their deadline; the users that went offline."""
        ...

    async def query(self, users: Sequence[str]) -> dict[str, UserPresence]:
        """Every user asked for (never-seen users: offline, last_seen None), in one round trip."""
        ...

    async def online_among(self, users: Sequence[str], limit: int) -> OnlineSample:
        """How many of ``users`` are online, and the first ``limit`` of them, in order asked."""
        ...

    async def ping(self) -> None:
        """Raise PresenceUnavailable unless the store answers now (for readiness checks)."""
        ...

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...
