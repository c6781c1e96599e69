"""Which rooms this node protects, and the reports that give every node the cluster's view.

A channel is *protected* while the detector calls it hot (its rates, or an operator's pin) **and**
it is a room. Every channel is counted, but only rooms — open, unbounded, the hot-room candidates
of the protocol — get protection: a DM or a group (at most ``CHAT_GROUP_MAX_MEMBERS``) has a
bounded fan-out, its clients are never sent batch frames, and a bot flooding one is held back by
its lane. A channel's kind is looked up once, when it first turns hot, and remembered (it never
changes); a lookup that fails is tried again at the next tick.

**Reports.** Every node subscribes the relay topic ``h:rates`` (in embedded mode the in-process
relay loops back, and the detector ignores its own node). Every 0.5 s a node whose detector has
candidates — rooms above their local floor, or hot here — publishes one envelope (kind ``h``,
origin = its node ID) whose frame is ``{"rooms": {"<room>": [send, fanout, fetch, join]}}`` (its
local rates); a quiet cluster publishes nothing. Receivers feed each line to
``HotDetector.merge_remote``. Pins travel the same way (``{"pin": "<room>", "hot": true|false|null}``)
so an operator's pin holds on every node that is up (a node started later does not know it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import orjson

from chat import events
from chat.errors import ChatError
from chat.hot.detector import HotDetector, Rates, Thresholds, Transition
from chat.protect.counters import Counters
from chat.protect.listen import Listener
from chat.protocol import Frame
from chat.relay.base import Relay

log = logging.getLogger(__name__)

REPORT_TOPIC = "h:rates"
KINDS_REMEMBERED = 100_000  # channels whose kind (room or not) is remembered
THROTTLED_FOR_S = 10.0  # a room counts as throttled this long after its last refusal (ops view)


@dataclass(frozen=True, slots=True)
class RoomView:
    """One watched room as the ops API shows it (rates cluster-wide unless ``local``)."""

    channel: int
    send_per_s: float
    fanout_per_s: float
    fetch_per_s: float
    join_per_s: float
    local: Rates  # this node's share
    hot: bool
    hot_since_ms: int | None  # wall clock, ms since the Unix epoch
    pinned: bool | None  # the operator's pin (None: follows its rates)
    throttled: bool  # something was refused to protect it in the last THROTTLED_FOR_S


class HotRooms(Listener):
    """The detector of this node, which hot channels are rooms, its reports and pins (see the
    module docstring); a listener of the reports topic."""

    def __init__(
        self,
        *,
        node_id: str,
        relay: Relay,
        counters: Counters,
        on_transition: Callable[[Transition], None],
        is_room: Callable[[int], Awaitable[bool]],
        thresholds: Thresholds | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(f"hot-rooms-{node_id}")
        self._node_id = node_id
        self._relay = relay
        self._counters = counters
        self._on_transition = on_transition  # every effective change, whatever caused it
        self._clock = clock
        self._wall = wall  # only to show hot_since to people
        self.detector = HotDetector(thresholds, now=clock(), node_id=node_id)
        self._is_room = is_room  # channel → whether it is a room (a store read; asked once per channel)
        self._kinds: OrderedDict[int, bool] = OrderedDict()  # what it answered (LRU: kinds never change)
        self._protected: set[int] = set()  # hot, and rooms
        self._confirming: dict[int, Transition] = {}  # hot, kind not known yet
        self._lookups: dict[int, asyncio.Task[None]] = {}  # channel → its kind being read
        # The store's breaker is CRITICAL (shown to operators; requests fail fast in the breaker).
        self.critical = False
        self._refused: dict[int, float] = {}  # room → last refusal (only protected rooms refuse)

    # The reports topic (a lost report is replaced 0.5 s later: gaps need nothing)

    def deliver_control(self, frame: Frame) -> None:
        """A report or a pin from a node (our own come back too: the detector ignores them)."""
        try:
            body = orjson.loads(frame.data)
            node, now = body.get("node", ""), self._clock()
            if node == self._node_id:
                return
            if "pin" in body:
                self._apply_pin(int(body["pin"]), body.get("hot"), now)
                return
            self._counters.reports_received += 1
            for room, rates in body["rooms"].items():
                self.detector.merge_remote(node, int(room), Rates(*map(float, rates)), now)
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("dropping a malformed hot-room report")

    # Queries and counting (the per-event path)

    def protected(self, room: int) -> bool:
        return room in self._protected

    def refused(self, room: int) -> None:
        """Something was refused to protect ``room`` (the ops view shows it as throttled)."""
        self._refused[room] = self._clock()

    # Periodic

    def tick(self, now: float) -> None:
        """Judge the rooms (every ~250 ms); act on every transition."""
        for transition in self.detector.tick(now):
            self._transition(transition)
        for room in [r for r, at in self._refused.items() if now - at > THROTTLED_FOR_S]:
            del self._refused[room]
        for room, transition in list(self._confirming.items()):
            if room not in self._lookups:
                self._confirm(transition)  # its lookup failed: again

    async def report(self, now: float) -> None:
        """Tell the other nodes the local rates of this node's candidate rooms (none: say nothing)."""
        rates = self.detector.candidates(now)
        if not rates:
            return
        body = {"node": self._node_id, "rooms": {str(room): [round(r, 3) for r in rate] for room, rate in rates.items()}}
        if await self._publish(body):
            self._counters.reports_sent += 1

    async def _publish(self, body: Mapping[str, object]) -> bool:
        try:
            await self._relay.publish(REPORT_TOPIC, events.pack(events.HOT, 0, 0, self._node_id, orjson.dumps(body)))
        except ChatError as exc:
            log.debug("hot-room report not published: %s", exc.message)  # the relay warns once per outage
            return False
        return True

    def _transition(self, transition: Transition) -> None:
        room = transition.room
        if transition.hot:
            self._confirm(transition)
            return
        self._confirming.pop(room, None)
        if room not in self._protected:
            return  # it never was (not a room)
        self._protected.discard(room)
        self._counters.rooms_cooled += 1
        self._refused.pop(room, None)
        log.info("room %d is no longer hot (%s)", room, transition.cause)
        self._on_transition(transition)

    def _confirm(self, transition: Transition) -> None:
        """Protect a channel that turned hot once it is known to be a room."""
        room = transition.room
        kind = self._kinds.get(room)
        if kind is None:
            self._confirming[room] = transition
            if room not in self._lookups:
                task = self._lookups[room] = asyncio.ensure_future(self._look_up(room))
                task.add_done_callback(lambda _: self._lookups.pop(room, None))
            return
        self._confirming.pop(room, None)
        if kind and self.detector.is_hot(room) and room not in self._protected:
            self._protected.add(room)
            self._counters.rooms_heated += 1
            log.info("room %d is hot (%s)", room, transition.cause)
            self._on_transition(transition)

    async def _look_up(self, room: int) -> None:
        try:
            kind = await self._is_room(room)
        except ChatError as exc:
            log.info("hot channel %d: its kind could not be read (%s); trying again", room, exc.message)
            return
        self._kinds[room] = kind
        if len(self._kinds) > KINDS_REMEMBERED:
            self._kinds.popitem(last=False)
        transition = self._confirming.get(room)
        if transition is not None:
            self._confirm(transition)

    async def confirmed(self) -> None:
        """Returns once every kind being read is known (the rooms among the hot channels are protected)."""
        await asyncio.gather(*(asyncio.shield(t) for t in list(self._lookups.values())), return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._lookups.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # Operators

    async def pin(self, room: int, hot: bool | None) -> None:
        """Force ``room`` hot (True) or not (False) on every node that is up; None: follow its
        rates again. ValueError past the detector's pin limit."""
        self._apply_pin(room, hot, self._clock())
        lookup = self._lookups.get(room)
        if lookup is not None:
            await asyncio.shield(lookup)  # in force here (if it is a room) when this returns
        await self._publish({"node": self._node_id, "pin": str(room), "hot": hot})

    def _apply_pin(self, room: int, hot: object, now: float) -> None:
        transition = self.detector.unpin(room, now) if hot is None else self.detector.pin(room, bool(hot), now)
        if transition is not None:
            self._transition(transition)

    def snapshot(self) -> list[RoomView]:
        """Every room the detector watches (candidates, hot, reported, pinned), hottest first."""
        now = self._clock()
        wall_ms = self._wall() * 1000
        out = []
        for room, state in self.detector.snapshot(now).items():
            since = state.hot_since
            out.append(
                RoomView(
                    room,
                    *state.rates,
                    local=state.local,
                    hot=since is not None and room in self._protected,
                    hot_since_ms=None if since is None else int(wall_ms - (now - since) * 1000),
                    pinned=state.pinned,
                    throttled=room in self._refused,
                )
            )
        return sorted(out, key=lambda v: (not v.hot, -v.send_per_s))
