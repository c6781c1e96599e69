"""Which rooms this node protects, and the reports that give every node the cluster's view.

A room is *protected* while the detector calls it hot (its rates, or an operator's pin) or while
a dependency is CRITICAL (:attr:`HotRooms.critical`: then every room is).

**Reports.** Every node subscribes the relay topic ``h:rates`` (in embedded mode the in-process
relay loops back, and the detector ignores its own node). Every 0.5 s a node whose detector has
candidates — rooms above their local floor, or hot here — publishes one envelope (kind ``h``,
origin = its node ID) whose frame is ``{"rooms": {"<room>": [send, fanout, fetch, join]}}`` (its
local rates); a quiet cluster publishes nothing. Receivers feed each line to
``HotDetector.merge_remote``. Pins travel the same way (``{"pin": "<room>", "hot": true|false|null}``)
so an operator's pin holds on every node that is up (a node started later does not know it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
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
    """The detector of this node, its reports, pins and the critical switch (see the module docstring);
    a listener of the reports topic."""

    def __init__(
        self,
        *,
        node_id: str,
        relay: Relay,
        counters: Counters,
        on_transition: Callable[[Transition], None],
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
        # A dependency is CRITICAL: every room gets its protective settings.
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
        return self.critical or self.detector.is_hot(room)

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
        if transition.hot:
            self._counters.rooms_heated += 1
        else:
            self._counters.rooms_cooled += 1
            self._refused.pop(transition.room, None)
        log.info("room %d is %s (%s)", transition.room, "hot" if transition.hot else "no longer hot", transition.cause)
        self._on_transition(transition)

    # Operators

    async def pin(self, room: int, hot: bool | None) -> None:
        """Force ``room`` hot (True) or not (False) on every node that is up; None: follow its
        rates again. ValueError past the detector's pin limit."""
        self._apply_pin(room, hot, self._clock())
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
                    hot=since is not None,
                    hot_since_ms=None if since is None else int(wall_ms - (now - since) * 1000),
                    pinned=state.pinned,
                    throttled=room in self._refused,
                )
            )
        return sorted(out, key=lambda v: (not v.hot, -v.send_per_s))
