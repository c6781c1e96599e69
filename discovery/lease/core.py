"""What both lease adapters share: the held ID's floor and reservation, the loop that keeps
the reservation ahead of the clock, ``decide`` and change events.

The adapter decides whether the lease is held (``valid``) and how a floor record is
written; this class never writes on its own behalf while the adapter says it is not
certainly held, so a node that lost its lease can never push a floor it no longer owns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from discovery.errors import DiscoveryError
from discovery.lease.base import LeaseEvent
from discovery.lease.mint import (
    FloorRecord,
    MintDecision,
    Refuse,
    ReservePolicy,
    mint_decision,
)
from discovery.listeners import Listeners

log = logging.getLogger(__name__)

RETRY_WRITE_S = 0.5  # after a failed reservation write: soon, the old reservation is running out


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch (what Snowflake IDs encode)."""
    return time.time_ns() // 1_000_000


class LeaseCore:
    """Floor, reservation, decisions and events of one lease holder (event-loop only)."""

    def __init__(self, *, holder: str, policy: ReservePolicy, clock_ms: Callable[[], int], max_wait_ms: int) -> None:
        self.holder = holder  # written into floor records, for operators
        self.policy = policy
        self.clock_ms = clock_ms  # injected so tests can put the clock far behind
        self.max_wait_ms = max_wait_ms  # how long a mint may wait for the clock to pass the floor
        self.worker_id: int | None = None
        self.floor_ms = 0
        self.reserved_until_ms = 0
        # The record as last durably written: the base of the next write.
        self.record = FloorRecord()
        self._listeners: Listeners[LeaseEvent] = Listeners("lease")
        self._announced = LeaseEvent(False, None, None)
        # Set while the adapter says the lease is certainly held: the refresh loop waits on it.
        self._held = asyncio.Event()

    def begin(self, worker_id: int, stored: FloorRecord, written: FloorRecord) -> None:
        """A lease was taken: ``stored`` was found, ``written`` (its reservation) is durable."""
        self.worker_id = worker_id
        self.floor_ms = stored.start_floor()
        self.record = written
        self.reserved_until_ms = written.reserved_until_ms

    def end(self) -> None:
        """The lease is gone: nothing may be minted until :meth:`begin` again."""
        self.floor_ms = 0
        self.reserved_until_ms = 0

    def decide(self, valid: bool, now_ms: int | None) -> MintDecision:
        if not valid:
            return Refuse("this node holds no worker-ID lease right now", 1000)
        now = self.clock_ms() if now_ms is None else now_ms
        return mint_decision(self.floor_ms, self.reserved_until_ms, now, max_wait_ms=self.max_wait_ms)

    # Events

    def subscribe(self, callback: Callable[[LeaseEvent], None]) -> Callable[[], None]:
        return self._listeners.add(callback)

    def announce(self, valid: bool, worker_id: int | None, at: float | None = None) -> None:
        """Tell listeners if validity or the ID changed since the last announcement
        (``at``: when it took effect, default now)."""
        if valid:
            self._held.set()
        else:
            self._held.clear()
        last = self._announced
        if (valid, worker_id) == (last.valid, last.worker_id):
            return
        event = LeaseEvent(valid, worker_id, last.worker_id, time.monotonic() if at is None else at)
        self._announced = event
        log.info("worker-ID lease %s (worker %s)", "valid" if valid else "NOT valid", worker_id)
        self._listeners.notify(event)

    # The reservation

    async def keep_reserving(self, write: Callable[[FloorRecord], Awaitable[None]]) -> None:
        """Extend the reservation before it runs out (run as a task; cancel to stop).

        ``write`` persists a record durably (compare-and-set where the backend has it) and
        raises :class:`DiscoveryError` when it cannot; the reservation moves only after it returns.
        """
        failing = False
        while True:
            delay_ms = self.policy.refresh_at(self.reserved_until_ms) - self.clock_ms()
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)  # a deadline on the wall clock, not a guess
            await self._held.wait()
            record = self.record.reserve(self.policy.next_until(self.reserved_until_ms, self.clock_ms()), self.holder)
            try:
                await write(record)
            except DiscoveryError as exc:
                # One warning per outage, not one per retry.
                log.log(logging.DEBUG if failing else logging.WARNING, "could not extend the minting reservation of worker %s: %s", self.worker_id, exc.message)
                failing = True
                await asyncio.sleep(RETRY_WRITE_S)
                continue
            if failing:
                failing = False
                log.info("minting reservation of worker %s extended again", self.worker_id)
            self.record = record
            self.reserved_until_ms = record.reserved_until_ms


class CoreBackedLease:
    """The WorkerLease answers both adapters give straight from their :class:`LeaseCore`."""

    _core: LeaseCore

    @property
    def worker_id(self) -> int | None:
        return self._core.worker_id

    @property
    def floor_ms(self) -> int:
        return self._core.floor_ms

    @property
    def reserved_until_ms(self) -> int:
        return self._core.reserved_until_ms

    def valid(self) -> bool:
        raise NotImplementedError

    def decide(self, now_ms: int | None = None) -> MintDecision:
        return self._core.decide(self.valid(), now_ms)

    def subscribe(self, callback: Callable[[LeaseEvent], None]) -> Callable[[], None]:
        return self._core.subscribe(callback)
