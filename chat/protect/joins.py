"""The join gate of protected rooms: a waiting room (:mod:`chat.waiting`), or a plain join limit.

What counts as a join: a user joining a room *themselves* (``POST /v1/channels/{id}/members``
without ``user``, or naming themselves) while not a member. Being added by a member is not a join
(the member chose to), and neither is a WebSocket ``subscribe`` (only members may subscribe); a
subscribe is *counted* with joins for detection, though, since a room that thousands enter at
once is hot.

A join to a room that is not protected passes (it is only counted). To a protected room, with
the waiting room on (``hot_waiting_room``):

* a ``ticket`` the user holds (from an ``admitted`` frame) is redeemed: in;
* else the user *arrives*: admitted at once (nobody waits and this second has a slot) → in;
  queued → refused with ``throttled``, ``retry_after_ms`` (the time the line ahead of them takes
  at the budget) and ``position``, and a ``waiting {channel, position}`` frame on their sockets;
  the line full → ``throttled``.
* The node that queued someone keeps a timer for the room (one per room, none per user) that
  admits from the head of the line as slots free up and publishes ``admitted {channel, ticket,
  expires_in_ms}`` on each admitted user's topic, so every socket of theirs, on any node, gets it.
  Clients repeat the join with the ticket (or after ``retry_after_ms`` anyway: arriving again
  keeps their place, and a user already admitted gets their ticket back).
* When the room cools down, its line is let in at once (each gets an ``admitted`` frame).

With the waiting room off, joins to a protected room take a token from the room's join limit
(``hot_room_join_per_s`` per second) or are refused with ``throttled``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from chat import events, protocol
from chat.errors import ChatError, Throttled
from chat.hot import retry_ms
from chat.hot.detector import JOIN
from chat.hot.limits import RoomLimiter
from chat.protect.counters import Counters
from chat.protect.rooms import HotRooms
from chat.relay.base import Relay, user_topic
from chat.waiting.base import Admission, Admitted, LineRules, Queued, WaitingRooms

log = logging.getLogger(__name__)

RETRY_ADMIT_S = 1.0  # an admission pass that failed (the backend) is tried again this much later


class JoinGate:
    """The :class:`~chat.guards.JoinGuard` of this node (see the module docstring)."""

    def __init__(
        self, rooms: HotRooms, lines: WaitingRooms, relay: Relay, *, counters: Counters, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rooms = rooms
        self._lines = lines
        self._relay = relay
        self._counters = counters
        self._clock = clock
        # Dynamic settings
        self.waiting_room = True  # hot_waiting_room
        self.limits_on = True  # hot_room_limits
        self.rules = LineRules(budget_per_s=20)
        self.limiter = RoomLimiter(per_s=20.0, burst=20)  # used with the waiting room off
        self._timers: dict[int, asyncio.TimerHandle] = {}  # room → its next admission pass
        self._queued_in: set[int] = set()  # rooms in whose line this node put someone
        self._passes: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._passes):
            task.cancel()
        await asyncio.gather(*self._passes, return_exceptions=True)

    async def join(self, user: str, channel: int, ticket: str | None) -> None:
        rooms = self._rooms
        rooms.detector.count(channel, JOIN, self._clock())
        if not rooms.protected(channel):
            return
        if not self.waiting_room:
            refused = self.limiter.take(channel, self._clock()) if self.limits_on else None
            if refused is not None:
                self._counters.joins_refused += 1
                self._rooms.refused(channel)
                raise Throttled("this room takes only so many new members per second; try again shortly", retry_after_ms=refused)
            self._counters.joins_admitted += 1
            return
        lines = self._lines
        if ticket is not None and await lines.redeem(channel, user, ticket):
            self._counters.joins_admitted += 1
            return
        answer = await lines.arrive(channel, user, self.rules)
        if isinstance(answer, Admitted):
            if await lines.redeem(channel, user, answer.ticket):
                self._counters.joins_admitted += 1
                return
            raise Throttled("your admission expired just now; join again", retry_after_ms=1)  # a ticket that lapsed in between
        self._rooms.refused(channel)  # the ops view shows the room as throttled
        if not isinstance(answer, Queued):
            self._counters.joins_refused += 1
            raise Throttled("this room's waiting line is full; try again later", retry_after_ms=answer.retry_after_ms)
        self._counters.joins_queued += 1
        self._queued_in.add(channel)
        self._arm(channel, 0.0)
        await self._tell(user, "waiting", {"channel": str(channel), "position": answer.position})
        wait_ms = retry_ms(answer.position / max(self.rules.budget_per_s, 1))
        raise Throttled(
            f"this room is busy: you are number {answer.position} in line", retry_after_ms=wait_ms, channel=str(channel), position=answer.position
        )

    def lines(self) -> list[int]:
        """Rooms in whose line this node put someone (and has not let in at once since)."""
        return list(self._queued_in)

    async def cooled(self, room: int) -> None:
        """``room`` is not protected any more (or the waiting room was switched off): let its whole line in."""
        self._queued_in.discard(room)
        handle = self._timers.pop(room, None)
        if handle is not None:
            handle.cancel()
        rules = LineRules(self.rules.max_queue, self.rules.max_queue, self.rules.ticket_ttl_s, self.rules.entry_ttl_s)
        await self._admit(room, rules)

    # Admission passes

    def _arm(self, room: int, delay_s: float) -> None:
        if room in self._timers:
            return  # armed already (the earlier pass re-arms for what is left)
        self._timers[room] = asyncio.get_running_loop().call_later(delay_s, self._spawn, room)

    def _spawn(self, room: int) -> None:
        self._timers.pop(room, None)
        task = asyncio.ensure_future(self._pass(room))
        self._passes.add(task)
        task.add_done_callback(self._passes.discard)

    async def _pass(self, room: int) -> None:
        try:
            wait_s = await self._admit(room, self.rules)
        except ChatError as exc:
            log.warning("waiting room of %d: admission failed (%s); retrying", room, exc.message)
            wait_s = RETRY_ADMIT_S
        if wait_s is not None and self._rooms.protected(room):
            self._arm(room, wait_s)

    async def _admit(self, room: int, rules: LineRules) -> float | None:
        admitted, wait_s = await self._lines.admit(room, rules)
        for admission in admitted:
            self._counters.admissions += 1
            await self._admitted(room, admission)
        return wait_s

    async def _admitted(self, room: int, admission: Admission) -> None:
        fields = {"channel": str(room), "ticket": admission.ticket, "expires_in_ms": admission.expires_in_ms}
        await self._tell(admission.user, "admitted", fields)

    async def _tell(self, user: str, op: str, fields: dict[str, object]) -> None:
        """A waiting-room frame on every socket of ``user`` (any node); best effort: the HTTP
        answer and repeating the join say the same."""
        try:
            await self._relay.publish(user_topic(user), events.pack(events.WAITING, 0, 0, "-", protocol.encode(op, fields)))
        except ChatError as exc:
            log.debug("waiting-room frame for %s not published: %s", user, exc.message)
