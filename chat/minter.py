"""The server's minter: Snowflake IDs only under a worker ID this node holds, and only above
every millisecond that worker ID may already have used.

Every mint asks the node's :class:`Permit` (the discovery WorkerLease) first — an O(1) call with
no I/O — and mints only at the millisecond it allows: a lost ZooKeeper session, a clock behind
the worker ID's durable floor (a restart with the clock 120 s back), or a reservation that has
not kept up all refuse with ``unavailable`` and ``retry_after_ms`` instead of minting an ID that
could collide or sort below one already stored. A short wait (the clock a few milliseconds
behind, 4,096 IDs used up in one millisecond) is waited out, up to ``max_wait_ms``.

When the worker ID changes (a new one after a lost session), a new generator starts above the
new ID's floor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from chat.errors import Unavailable
from chat.ids import EPOCH_MS, TIMESTAMP_SHIFT, ClockBehind, SnowflakeGenerator, gave_up, wall_clock_ms, worker_of
from discovery.lease.mint import MintAt, MintDecision, Wait


class Permit(Protocol):
    """What the minter needs from a worker-ID lease (``discovery.lease.base.WorkerLease``)."""

    @property
    def worker_id(self) -> int | None: ...

    @property
    def floor_ms(self) -> int: ...

    def decide(self, now_ms: int | None = None) -> MintDecision: ...


class FixedWorker:
    """A permit for one worker ID held by nobody else, with nothing durable behind it: for
    tools, tests and benchmarks that own their whole ID space. The server uses a lease."""

    def __init__(self, worker_id: int, *, floor_ms: int = 0, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.worker_id = worker_id
        self.floor_ms = floor_ms
        self._clock = clock

    def decide(self, now_ms: int | None = None) -> MintDecision:
        return MintAt(self._clock() if now_ms is None else now_ms)


class IdMinter:
    """Mints IDs as its permit allows (see the module docstring)."""

    def __init__(self, permit: Permit, *, max_wait_ms: int = 2000) -> None:
        self._permit = permit
        # Past this the wait is not a hiccup: refuse, and let an operator look (NTP, ZooKeeper).
        self.max_wait_ms = max_wait_ms
        self._generator: SnowflakeGenerator | None = None
        # IDs above this, of the generator's worker, were minted by this process.
        self._first_bound = 0

    async def mint(self) -> int:
        """A new ID; :class:`~chat.errors.Unavailable` (with ``retry_after_ms``) if none may be minted now."""
        waited = 0
        while True:
            decision = self._permit.decide()
            if isinstance(decision, MintAt):
                try:
                    return self._current().next_id_at(decision.ms)
                except ClockBehind as behind:
                    wait_ms = behind.wait_ms
            elif isinstance(decision, Wait):
                wait_ms = decision.ms
            else:
                raise Unavailable(f"cannot mint message IDs now: {decision.reason}", retry_after_ms=decision.retry_after_ms)
            if waited + wait_ms > self.max_wait_ms:
                raise gave_up(wait_ms, waited)
            await asyncio.sleep(wait_ms / 1000)
            waited += wait_ms

    def _current(self) -> SnowflakeGenerator:
        worker_id = self._permit.worker_id
        generator = self._generator
        if worker_id is None:
            raise Unavailable("this node holds no worker ID right now", retry_after_ms=1000)
        if generator is None or generator.worker_id != worker_id:
            generator = self._generator = SnowflakeGenerator(worker_id, floor_ms=self._permit.floor_ms)
            self._first_bound = generator.bound
        return generator

    def minted_here(self, message_id: int) -> bool:
        """Whether this process minted ``message_id`` (with its current generator)."""
        generator = self._generator
        return generator is not None and worker_of(message_id) == generator.worker_id and message_id > self._first_bound

    @property
    def bound(self) -> int:
        """An ID at or above every ID minted so far (by this process, or by earlier holders of
        its worker ID up to the floor) and below every ID it will mint: the seam bound of a
        single-node subscribe."""
        if self._generator is not None:
            return self._generator.bound
        floor = self._permit.floor_ms - EPOCH_MS
        return (floor << TIMESTAMP_SHIFT) | ((1 << TIMESTAMP_SHIFT) - 1) if floor >= 0 else 0

    @property
    def last_minted_ms(self) -> int | None:
        """Unix milliseconds of the last ID minted (None: none yet), for a clean hand-back."""
        return None if self._generator is None else self._generator.last_ms
