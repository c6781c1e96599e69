"""The waiting room of one hot room: joins beyond the room's join budget wait in line and are
admitted in arrival order, at most ``budget_per_s`` per second, each with a short-lived ticket.
Pure: every call takes ``now`` (seconds; admission slots are the clock's whole seconds).

Flow: a join to a protected room calls :meth:`WaitingRoom.arrive`. The answer is

* :class:`Admitted` — nobody is waiting and this second has a slot: the join proceeds and
  redeems the ticket at once;
* :class:`Queued` — the client is told its position (1 = next) and waits; the gateway calls
  :meth:`admit` whenever :meth:`next_admission` comes due, sends each admitted user their
  ticket, and the client repeats the join with it: :meth:`redeem` (once, by that user, before
  ``ticket_ttl_s``) lets it in;
* :class:`Full` — the line holds ``max_queue`` users: refused up front with a retry hint (the
  time the line takes to drain at the budget).

Arriving again while queued keeps the place and refreshes it; a queued entry not refreshed for
``entry_ttl_s`` expires (the client went away without :meth:`cancel`). Expired entries are
skipped when they reach the head and dropped by :meth:`sweep`. A ticket not redeemed in time
is lost with its slot (the slot's second has passed). Every admitted user takes a slot of the
second it was admitted in, and a slot is taken only at the head of the line, so admission order
is arrival order and no second admits more than ``budget_per_s`` (a dynamic setting).

**Redis mapping** (each operation below is one atomic step over one room's few keys — a Lua
script — so a node restart loses no place). Keys in one hash slot, ``{room}``:

* ``wr:{room}:seq`` — the arrival counter (``INCR``): the arrival number is the entry's score
  and the ticket's id;
* ``wr:{room}:q`` — a sorted set, member user, score arrival number (``ZADD NX``; position is
  ``ZRANK`` + 1; admission pops the head with ``ZPOPMIN``; cancel is ``ZREM``); with
  ``wr:{room}:exp``, a hash user → expiry for entry expiry;
* ``wr:{room}:s:<second>`` — admissions in that second (``INCR`` + ``EXPIRE 2``): the slot counter;
* ``wr:{room}:t`` — a hash user → "ticket id:expiry" (``redeem`` = ``HGET`` + compare + ``HDEL``).
The in-memory model mirrors them: ``_seq``, ``_order``/``_queued``, ``_second``/``_used``, ``_tickets``.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import NamedTuple

from chat.hot import retry_ms


class Ticket(NamedTuple):
    """Lets ``user`` join once before ``expires``. ``id`` is the arrival number, as a string."""

    id: str
    user: str
    expires: float


class Admitted(NamedTuple):
    ticket: Ticket


class Queued(NamedTuple):
    position: int  # 1: next in line


class Full(NamedTuple):
    retry_after_ms: int


class WaitingRoom:
    """One room's line (see the module docstring)."""

    def __init__(self, *, budget_per_s: int, max_queue: int = 10_000, ticket_ttl_s: float = 30.0, entry_ttl_s: float = 60.0) -> None:
        # Limits (dynamic: the gateway may change them at any time)
        self.budget_per_s = budget_per_s  # admissions per clock second; 0 closes the door
        self.max_queue = max_queue
        self.ticket_ttl_s = ticket_ttl_s
        self.entry_ttl_s = entry_ttl_s
        # State
        self._seq = 0  # the last arrival number given out
        self._order: list[tuple[int, str]] = []  # (arrival number, user), ascending: the line
        self._queued: dict[str, tuple[int, float]] = {}  # user → (arrival number, expires)
        self._second = -1  # the clock second `_used` counts
        self._used = 0  # admissions in `_second`
        self._tickets: dict[str, Ticket] = {}  # user → their unredeemed ticket
        self._issued: deque[Ticket] = deque()  # tickets in the order given (≈ expiry order), for purging

    def __len__(self) -> int:
        """Users in line (expired entries not yet dropped included)."""
        return len(self._order)

    def idle(self, now: float) -> bool:
        """Nobody waits, no ticket is out and this second's admissions are counted no more: the
        room's line may be forgotten (a new one would start from the same state)."""
        return not self._order and not self._tickets and int(now) != self._second

    def arrive(self, user: str, now: float) -> Admitted | Queued | Full:
        """A join by ``user``: admitted now, queued (or still queued, refreshed), or refused."""
        entry = self._queued.get(user)
        if entry is not None:
            self._queued[user] = (entry[0], now + self.entry_ttl_s)
            return Queued(self._position(entry[0]))
        ticket = self._tickets.get(user)
        if ticket is not None and ticket.expires > now:
            return Admitted(ticket)  # admitted already (a reconnect before redeeming)
        if not self._order and self._slot(now):
            self._seq += 1
            return Admitted(self._issue(self._seq, user, now))
        if len(self._order) >= self.max_queue:
            return Full(retry_ms(len(self._order) / max(self.budget_per_s, 1)))
        self._seq += 1
        self._order.append((self._seq, user))  # arrival numbers only grow: still sorted
        self._queued[user] = (self._seq, now + self.entry_ttl_s)
        return Queued(len(self._order))

    def position(self, user: str) -> int | None:
        """``user``'s place in line (1 = next), or None if not queued. O(log n)."""
        entry = self._queued.get(user)
        return None if entry is None else self._position(entry[0])

    def _position(self, seq: int) -> int:
        return bisect.bisect_left(self._order, (seq,)) + 1

    def cancel(self, user: str) -> bool:
        """``user`` leaves the line (gave up, disconnected). False if not queued."""
        entry = self._queued.pop(user, None)
        if entry is None:
            return False
        del self._order[self._position(entry[0]) - 1]
        return True

    def admit(self, now: float) -> list[Ticket]:
        """Admit from the head of the line while this second has slots; the tickets, in order."""
        self._purge_tickets(now)
        out: list[Ticket] = []
        head = 0
        while head < len(self._order) and self._slot(now, take=False):
            seq, user = self._order[head]
            head += 1
            _, expires = self._queued.pop(user)
            if expires > now:  # an expired entry is skipped: its client is gone
                self._slot(now)
                out.append(self._issue(seq, user, now))
        del self._order[:head]
        return out

    def next_admission(self, now: float) -> float | None:
        """When :meth:`admit` may admit someone next (``now`` if already), or None: nobody waits
        or the budget is 0."""
        if not self._order or self.budget_per_s <= 0:
            return None
        return now if self._slot(now, take=False) else float(self._second + 1)

    def redeem(self, ticket_id: str, user: str, now: float) -> bool:
        """Consume ``user``'s ticket: True once, if the id matches and it has not expired."""
        ticket = self._tickets.get(user)
        if ticket is None or ticket.id != ticket_id or ticket.expires <= now:
            return False
        del self._tickets[user]
        return True

    def sweep(self, now: float) -> list[str]:
        """Drop every expired entry now (not only at the head); returns their users. O(n)."""
        gone = [user for user, (_, expires) in self._queued.items() if expires <= now]
        for user in gone:
            del self._queued[user]
        if gone:
            self._order = [(seq, user) for seq, user in self._order if user in self._queued]
        self._purge_tickets(now)
        return gone

    def _slot(self, now: float, *, take: bool = True) -> bool:
        """Whether the clock second of ``now`` has a slot left (and take it)."""
        second = int(now)
        if second != self._second:
            self._second, self._used = second, 0
        if self._used >= self.budget_per_s:
            return False
        self._used += take
        return True

    def _issue(self, seq: int, user: str, now: float) -> Ticket:
        ticket = Ticket(str(seq), user, now + self.ticket_ttl_s)
        self._tickets[user] = ticket
        self._issued.append(ticket)
        return ticket

    def _purge_tickets(self, now: float) -> None:
        issued = self._issued
        while issued and issued[0].expires <= now:
            ticket = issued.popleft()
            if self._tickets.get(ticket.user) is ticket:
                del self._tickets[ticket.user]
