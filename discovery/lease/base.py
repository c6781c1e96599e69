"""The WorkerLease port: which Snowflake worker ID this node may mint with, and until when.

Contract (both adapters):
- :meth:`WorkerLease.acquire` claims a worker ID in ``0..1023`` that no other live node
  holds, reads the ID's floor record and durably reserves minting time ahead of the
  clock before it returns; bounded; raises :class:`~discovery.errors.NoFreeWorkerId`
  (ZooKeeper: none free) or :class:`~discovery.errors.DataDirInUse` (static: the data
  dir is locked by another process).
- :meth:`WorkerLease.valid` is O(1) with no I/O (the minter calls it on every mint): True
  only while the lease is certainly held. :meth:`WorkerLease.decide` adds the floor and
  the reservation: mint at this millisecond, wait briefly, or refuse (see
  :mod:`discovery.lease.mint`). Minting only on ``MintAt`` can never reuse a
  (worker ID, millisecond) pair that this or another node could have used.
- Change events (:class:`LeaseEvent`) are delivered on the event loop when validity or
  the worker ID changes: lost, regained, or regained with another ID (the minter then
  switches generators).
- :meth:`WorkerLease.close` gives the ID back. Pass the last millisecond really minted at
  so the next holder of this ID may start right after it instead of after the whole
  reservation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from discovery.lease.mint import MintDecision

MAX_WORKER_ID = 1023


@dataclass(frozen=True, slots=True)
class LeaseEvent:
    """Validity or the worker ID changed."""

    valid: bool  # may the minter mint now
    worker_id: int | None  # the ID held now (None: none held, e.g. after the session was lost)
    previous_worker_id: int | None  # the ID announced before; differs from worker_id when it changed
    # Monotonic instant the change took effect: a lapse is announced when noticed, but took
    # effect at the deadline, which may be a little earlier.
    at: float = field(default=0.0, compare=False)


class WorkerLease(Protocol):
    @property
    def worker_id(self) -> int | None:
        """The worker ID held (or being re-acquired after a loss); None before acquire."""

    @property
    def floor_ms(self) -> int:
        """Mint strictly above this wall-clock millisecond (the ID's earlier reservations)."""

    @property
    def reserved_until_ms(self) -> int:
        """Mint at most at this millisecond: durably reserved before it is used."""

    async def acquire(self) -> int:
        """Claim a worker ID and reserve minting time (bounded); returns the ID."""

    def valid(self) -> bool:
        """True only while the lease is certainly held. O(1), no I/O."""

    def decide(self, now_ms: int | None = None) -> MintDecision:
        """Mint at ``now_ms`` (default: the lease's wall clock)? ``Refuse`` whenever not :meth:`valid`."""

    def subscribe(self, callback: Callable[[LeaseEvent], None]) -> Callable[[], None]:
        """Call ``callback`` on the loop at each change; returns an unsubscribe function."""

    async def close(self, *, last_minted_ms: int | None = None) -> None:
        """Stop minting and give the ID back; ``last_minted_ms`` lets the next holder start right after it."""
