"""The WaitingRooms port: the lines of joins waiting to enter hot rooms, one line per room.

The rules are :mod:`chat.hot.waiting_room`'s (read its docstring): a join to a protected room
*arrives*; it is admitted at once while nobody waits and the clock second has a slot, else it
queues (or is refused when the line is full); admissions take from the head of the line, at
most ``budget_per_s`` per clock second, each with a ticket the user redeems once, before it
expires, by repeating the join.

Contract (``tests/contract/test_waiting_rooms.py``, both adapters):

* Every call is one atomic step on one room's line: concurrent calls from any node never
  admit out of arrival order, never admit more than the budget in one clock second, and never
  let one ticket in twice.
* ``rules`` come with every call (they are dynamic settings and may change between calls).
* Times handed out are relative (``expires_in_ms``, seconds to wait): nodes' clocks differ.
  "Clock second" is the adapter's clock: the Redis server's (so every node counts the same
  seconds), the process's monotonic clock in memory; both take an injected clock for tests.
* A failure or timeout of the backend raises :class:`chat.errors.Unavailable`.

Adapters: :mod:`chat.waiting.memory` (embedded: the line lives in the process and a restart
forgets it) and :mod:`chat.waiting.redis` (a restarted node loses no place).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class LineRules:
    """How a room's line behaves (dynamic settings ``hot_room_join_per_s`` and ``hot_waiting_*``)."""

    budget_per_s: int  # admissions per clock second
    max_queue: int = 10_000  # users in line before arrivals are refused
    ticket_ttl_s: float = 30.0  # an admission must be redeemed within this
    entry_ttl_s: float = 60.0  # a place in line not refreshed by arriving again lapses after this


class Admitted(NamedTuple):
    """Join now: redeem ``ticket`` (the same one again if the user was admitted already)."""

    ticket: str
    expires_in_ms: int


class Queued(NamedTuple):
    position: int  # 1: next in line


class Full(NamedTuple):
    retry_after_ms: int


class Admission(NamedTuple):
    """A user taken from the head of the line: tell them their ticket."""

    user: str
    ticket: str
    expires_in_ms: int


class WaitingRooms(Protocol):
    """Every room's line (see the module docstring)."""

    async def arrive(self, room: int, user: str, rules: LineRules) -> Admitted | Queued | Full:
        """A join by ``user``: admitted now, queued (or, if queued already, refreshed: same place), or refused."""

    async def redeem(self, room: int, user: str, ticket: str) -> bool:
        """Use ``user``'s ticket: True once, if it is theirs and has not expired."""

    async def admit(self, room: int, rules: LineRules) -> tuple[list[Admission], float | None]:
        """Admit from the head of the line while this second has slots (expired places are
        skipped); returns the admissions in order and the seconds until the next admission may
        happen (0.0: now; None: nobody waits)."""

    async def cancel(self, room: int, user: str) -> bool:
        """``user`` leaves the line; False if they were not in it."""

    async def position(self, room: int, user: str) -> int | None:
        """``user``'s place in line (1: next), None if not queued."""

    async def close(self) -> None:
        """Release connections (idempotent)."""
