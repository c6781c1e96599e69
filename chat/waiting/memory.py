"""In-process waiting rooms (embedded mode): one :class:`~chat.hot.waiting_room.WaitingRoom` per
room with a line, forgotten once it is idle. A restart forgets every line (one node: its clients
reconnect and join again anyway)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from chat.hot.waiting_room import Admitted as PureAdmitted
from chat.hot.waiting_room import Full as PureFull
from chat.hot.waiting_room import WaitingRoom
from chat.waiting.base import Admission, Admitted, Full, LineRules, Queued


def _ms(seconds: float) -> int:
    return max(0, math.ceil(seconds * 1000))


class MemoryWaitingRooms:
    """The WaitingRooms port in this process (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  # admission slots are this clock's whole seconds
        self._rooms: dict[int, WaitingRoom] = {}

    def _room(self, room: int, rules: LineRules | None) -> WaitingRoom:
        line = self._rooms.get(room)
        if line is None:
            line = self._rooms[room] = WaitingRoom(budget_per_s=rules.budget_per_s if rules else 1)
        if rules is not None:  # dynamic settings: the latest apply
            line.budget_per_s, line.max_queue = rules.budget_per_s, rules.max_queue
            line.ticket_ttl_s, line.entry_ttl_s = rules.ticket_ttl_s, rules.entry_ttl_s
        return line

    def _forget_if_idle(self, room: int) -> None:
        line = self._rooms.get(room)
        if line is not None and line.idle(self._clock()):
            del self._rooms[room]

    async def arrive(self, room: int, user: str, rules: LineRules) -> Admitted | Queued | Full:
        now = self._clock()
        answer = self._room(room, rules).arrive(user, now)
        if isinstance(answer, PureAdmitted):
            return Admitted(answer.ticket.id, _ms(answer.ticket.expires - now))
        if isinstance(answer, PureFull):
            return Full(answer.retry_after_ms)
        return Queued(answer.position)

    async def redeem(self, room: int, user: str, ticket: str) -> bool:
        line = self._rooms.get(room)
        if line is None:
            return False
        ok = line.redeem(ticket, user, self._clock())
        self._forget_if_idle(room)
        return ok

    async def admit(self, room: int, rules: LineRules) -> tuple[list[Admission], float | None]:
        if room not in self._rooms:
            return [], None
        line, now = self._room(room, rules), self._clock()
        admitted = [Admission(t.user, t.id, _ms(t.expires - now)) for t in line.admit(now)]
        at = line.next_admission(now)
        self._forget_if_idle(room)
        return admitted, None if at is None else max(0.0, at - now)

    async def cancel(self, room: int, user: str) -> bool:
        line = self._rooms.get(room)
        if line is None:
            return False
        gone = line.cancel(user)
        self._forget_if_idle(room)
        return gone

    async def position(self, room: int, user: str) -> int | None:
        line = self._rooms.get(room)
        return None if line is None else line.position(user)

    async def close(self) -> None:
        self._rooms.clear()
