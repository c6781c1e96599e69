"""Hot rooms as operators see them: the protection's view of each watched room, with its member
count and how many members are online.

:class:`RoomProtection` is what the ops API, the dashboard and the metrics need from hot-room
protection (:class:`chat.protect.guard.Protection`): its ``snapshot`` of watched rooms, ``pin``,
breaker ``health`` and refusals, plain ``counters`` and queue depths. :class:`ProtectionOps`
adapts the node's Protection to it (reading, never changing, what the protection keeps).

Members and online counts are not part of the protection's view: they come from the store and
the presence store, which a dashboard refreshing every second must not hammer. :class:`RoomFacts`
keeps them per room for :data:`FACTS_TTL_S`, refreshes at most :data:`FACTS_ROOMS` rooms (the
hottest first) in the background, each read bounded by :data:`FACTS_TIMEOUT_S`, and answers
from memory at once — ``None`` until a room's first refresh is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from chat.hot.limits import Lane

if TYPE_CHECKING:
    from chat.protect.guard import Protection

log = logging.getLogger(__name__)

#: A room's member and online counts are reused for this long.
FACTS_TTL_S = 10.0
#: At most this many rooms (the first of the snapshot: hottest first) get their counts.
FACTS_ROOMS = 50
#: One room's counts must come within this, or stay unknown until the next try.
FACTS_TIMEOUT_S = 2.0
#: Online members are counted among this many members at most (a room of millions is sampled).
ONLINE_SAMPLE = 10_000


class RoomView(Protocol):
    """One watched room, as hot-room protection reports it (rates cluster-wide)."""

    @property
    def channel(self) -> int: ...
    @property
    def send_per_s(self) -> float: ...
    @property
    def fanout_per_s(self) -> float: ...
    @property
    def fetch_per_s(self) -> float: ...
    @property
    def join_per_s(self) -> float: ...
    @property
    def hot(self) -> bool: ...
    @property
    def hot_since_ms(self) -> int | None: ...
    @property
    def pinned(self) -> bool | None: ...
    @property
    def throttled(self) -> bool: ...


class RoomProtection(Protocol):
    """What operators use of hot-room protection (the ops port; :class:`ProtectionOps` is its adapter)."""

    def snapshot(self) -> Sequence[RoomView]:
        """Every watched room, hottest first."""

    async def pin(self, room: int, hot: bool | None) -> None:
        """Protection on (True) or off (False) on every node, or back to its rates (None).
        ValueError past the detector's limit of pinned rooms."""

    def health(self) -> Mapping[str, str]:
        """Each guarded dependency's breaker state: "healthy", "caution" or "critical" (an
        embedded store or relay has no breaker: not listed)."""

    def refusals(self) -> Mapping[str, int]:
        """Requests each guarded dependency's breaker refused (failed fast), since start."""

    def counters(self) -> Mapping[str, int]:
        """Protection's events on this node since start, by kind (a fixed set of names)."""

    def queues(self) -> Mapping[str, int]:
        """Storage writes waiting now: per lane ("interactive", "hot", "bot"), and "hot_batches":
        hot rooms' messages queued or being written in batches."""


class ProtectionOps:
    """:class:`RoomProtection` over the node's :class:`~chat.protect.guard.Protection`."""

    def __init__(self, protection: Protection) -> None:
        self._p = protection

    def snapshot(self) -> Sequence[RoomView]:
        return self._p.snapshot()

    async def pin(self, room: int, hot: bool | None) -> None:
        await self._p.pin(room, hot)

    def health(self) -> Mapping[str, str]:
        return self._p.health()

    def refusals(self) -> Mapping[str, int]:
        p = self._p
        guarded = p.health()  # only the breakers in front of a real backend
        return {b.dependency: b.refused for b in (p.store_breaker, p.relay_breaker) if b.dependency in guarded}

    def counters(self) -> Mapping[str, int]:
        return self._p.counters.as_dict()

    def queues(self) -> Mapping[str, int]:
        writes = self._p.writes
        return {**{lane.name.lower(): writes.lanes.queued(lane) for lane in Lane}, "hot_batches": len(writes.batcher)}


@dataclass(frozen=True, slots=True)
class Facts:
    members: int
    online: int
    sampled: bool  # online counted among the first ONLINE_SAMPLE members only


class RoomFacts:
    """Member and online counts per room, cached and refreshed off the caller's path."""

    def __init__(
        self,
        *,
        count_members: Callable[[int], Awaitable[int]],
        list_members: Callable[[int, int], Awaitable[list[str]]],
        count_online: Callable[[list[str]], Awaitable[int]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count_members = count_members
        self._list_members = list_members
        self._count_online = count_online
        self._clock = clock
        self._known: dict[int, tuple[float, Facts]] = {}  # room → (when read, facts)
        self._refreshing: asyncio.Task[None] | None = None

    def get(self, room: int) -> Facts | None:
        entry = self._known.get(room)
        return None if entry is None else entry[1]

    def want(self, rooms: Sequence[int]) -> None:
        """Rooms about to be shown: refresh (in the background) those whose counts are old."""
        now = self._clock()
        rooms = list(rooms[:FACTS_ROOMS])
        keep = set(rooms)
        for room in [r for r in self._known if r not in keep]:
            del self._known[room]  # no longer watched: forget (bounded by FACTS_ROOMS)
        stale = [r for r in rooms if r not in self._known or now - self._known[r][0] >= FACTS_TTL_S]
        if stale and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh(stale), name="ops-room-facts")

    async def close(self) -> None:
        task, self._refreshing = self._refreshing, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _refresh(self, rooms: list[int]) -> None:
        for room in rooms:
            try:
                async with asyncio.timeout(FACTS_TIMEOUT_S):
                    members = await self._count_members(room)
                    sample = await self._list_members(room, ONLINE_SAMPLE)
                    online = await self._count_online(sample)
            except Exception as exc:  # noqa: BLE001 - a count we cannot get stays unknown; the view goes on
                log.debug("ops: counts of room %d unavailable: %s", room, exc)
                continue
            self._known[room] = (self._clock(), Facts(members, online, members > len(sample)))


def room_wire(view: RoomView, facts: Facts | None) -> dict[str, Any]:
    """One room as ``GET /v1/ops/hot-rooms`` shows it (``members``/``online`` null until known)."""
    return {
        "channel": str(view.channel),
        "send_per_s": round(view.send_per_s, 2),
        "fanout_per_s": round(view.fanout_per_s, 2),
        "fetch_per_s": round(view.fetch_per_s, 2),
        "join_per_s": round(view.join_per_s, 2),
        "members": None if facts is None else facts.members,
        "online": None if facts is None else facts.online,
        "online_sampled": None if facts is None else facts.sampled,
        "throttled": view.throttled,
        "hot": view.hot,
        "pinned": view.pinned,
        "hot_since": view.hot_since_ms,
    }
