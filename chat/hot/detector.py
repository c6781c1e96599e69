"""Which rooms are hot: per-room sliding-window rates, cluster aggregation of the few busy
rooms, hysteresis, operator pins. Pure: every call takes ``now`` (seconds, one monotonic
clock, ≥ 0); nothing awaits, nothing does I/O.

**Counting** (:meth:`HotDetector.count`: every send, fan-out, history fetch and join) must cost
next to nothing for the 99.9 % of quiet rooms. A room's counters are allocated on its first
event: four counts for the current bucket of ``window_s`` and four for the previous one. The
rate over the last window is the two-bucket approximation ``(current + previous × part of it
still in the window) / window_s``: exact for a steady rate up to one event per bucket; a burst
that stops is let go of within two windows. An event costs a dict lookup, a float compare, an
add and a compare, plus eight counter resets when it opens a new bucket (for a quiet room, most
of its events). ``bench/hot_detector.py`` measures it.

**Forgetting.** Counters live in two generations. :meth:`tick` rotates them every ``idle_s``
(a room's next event moves it to the young one) and drops the old one whole: a room idle for
``2 × idle_s`` is forgotten without a scan. The young generation rotates early at ``max_rooms``,
so memory stays under ``2 × max_rooms`` rooms whatever the churn, and a busy room is never the
one forgotten.

**The cluster.** A room whose count in the current bucket reaches its *local floor* (threshold
× ``hot_local_floor_ratio`` × ``window_s``, any kind) is a candidate. Only candidates and rooms hot
here are exported by :meth:`candidates`; other nodes feed them to :meth:`merge_remote`, where a
report counts for ``hot_remote_ttl_s`` after it arrived (local clock: node skew does not matter).
A room's cluster rate is its local rate plus its unexpired remote reports. Keep
``hot_local_floor_ratio`` ≤ 1 / (nodes a room's traffic spreads over), or no node exports it.

**Hot and cool.** :meth:`tick` (every ~250 ms) judges only candidates, hot rooms and reported
rooms. A room turns hot when any cluster rate reaches its threshold; it cools once *every* rate
has stayed below threshold × ``hot_cool_ratio`` for ``hot_cool_s`` (going back above the line restarts
the wait), so a steady rate never flaps. A pin forces a room hot or not hot whatever its rates.
:meth:`is_hot` answers the effective state (a dict lookup); :meth:`tick`, :meth:`pin` and
:meth:`unpin` return the :class:`Transition` when it changes. :attr:`HotDetector.thresholds`
may be replaced at any time (dynamic configuration): the next event and tick use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

#: Event kinds, indexes into a room's counters (plain ints: the per-event path indexes a list).
SEND, FANOUT, FETCH, JOIN = range(4)


class Rates(NamedTuple):
    """Events per second of each kind (indexable by :data:`SEND` … :data:`JOIN`)."""

    send: float = 0.0
    fanout: float = 0.0
    fetch: float = 0.0
    join: float = 0.0


ZERO = Rates()
_EMPTY = (0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a room is hot (dynamic configuration: replace the whole value to change it)."""

    hot_send_per_s: float = 50.0  # messages/s stored in the room, cluster-wide
    hot_fanout_per_s: float = 20_000.0  # deliveries/s to sockets (messages × local recipients), cluster-wide
    hot_fetch_per_s: float = 50.0  # history fetches/s of the room, cluster-wide
    hot_join_per_s: float = 20.0  # joins and subscribes/s to the room, cluster-wide
    hot_cool_ratio: float = 0.5  # hysteresis: cool only below threshold × this (0 < ratio < 1)
    hot_cool_s: float = 30.0  # … for this long without interruption
    hot_local_floor_ratio: float = 0.2  # a room is aggregated cluster-wide above threshold × this locally
    hot_remote_ttl_s: float = 3.0  # a remote node's report counts this long after it arrived

    def __post_init__(self) -> None:
        if min(self.limits()) <= 0 or self.hot_remote_ttl_s <= 0 or self.hot_cool_s < 0:
            raise ValueError("thresholds and hot_remote_ttl_s must be > 0, hot_cool_s ≥ 0")
        if not (0 < self.hot_cool_ratio < 1 and 0 < self.hot_local_floor_ratio <= 1):
            raise ValueError("hot_cool_ratio must be in (0, 1), hot_local_floor_ratio in (0, 1]")

    def limits(self) -> Rates:
        """The per-kind thresholds, as a :class:`Rates`."""
        return Rates(self.hot_send_per_s, self.hot_fanout_per_s, self.hot_fetch_per_s, self.hot_join_per_s)


class Transition(NamedTuple):
    """The effective hot state of ``room`` changed at ``at`` (``hot``: hot since ``at``; else cooled)."""

    room: int
    hot: bool
    at: float
    cause: str  # "rates", "pin" or "unpin"


class RoomState(NamedTuple):
    """One room as the ops API shows it."""

    rates: Rates  # cluster-wide (local + unexpired remote reports)
    local: Rates
    hot_since: float | None  # effective: None while not hot
    pinned: bool | None  # operator's pin (None: follows its rates)


class _Counts:
    """A room's counters: the current bucket, which ends at ``end``, and the one before it."""

    __slots__ = ("end", "cur", "prev", "candidate")

    def __init__(self) -> None:
        self.end = -1.0  # the per-event path compares one float: no division, no int()
        self.cur = [0, 0, 0, 0]
        self.prev = [0, 0, 0, 0]
        self.candidate = False  # in HotDetector._candidates (saves a set lookup per event)


class HotDetector:
    """Per-room rates and hot state of one node (see the module docstring)."""

    def __init__(
        self,
        thresholds: Thresholds | None = None,
        *,
        now: float,
        node_id: str = "",
        window_s: float = 1.0,
        idle_s: float = 60.0,
        max_rooms: int = 100_000,
        max_remote_rooms: int = 10_000,
        max_pins: int = 1_000,
    ) -> None:
        # Structure (fixed for the detector's life; thresholds are the dynamic part).
        self._node_id = node_id  # our own reports echo back through a shared relay: ignored
        self._window_s = window_s
        self._per_s = 1.0 / window_s  # buckets per second: `now * _per_s` is the bucket index
        self._idle_s = idle_s
        self._max_rooms = max_rooms
        self._max_remote_rooms = max_remote_rooms
        self._max_pins = max_pins
        self._thresholds = Thresholds()
        self._floor_counts = [0.0] * 4  # per-kind count in one bucket that makes a candidate
        self.thresholds = thresholds or Thresholds()
        # Counters in two generations (see "Forgetting").
        self._young: dict[int, _Counts] = {}
        self._old: dict[int, _Counts] = {}
        self._rotated_at = now
        # Rooms above their local floor, judged by tick() and exported by candidates().
        self._candidates: set[int] = set()
        # room → node → (rates, expires at)
        self._remote: dict[int, dict[str, tuple[Rates, float]]] = {}
        # Hot by rates: room → since; and since when a hot room has been below the cool line.
        self._detected: dict[int, float] = {}
        self._below: dict[int, float] = {}
        # Operator pins: room → forced state.
        self._pins: dict[int, bool] = {}
        # Effective hot rooms → since (what is_hot answers).
        self._since: dict[int, float] = {}

    @property
    def thresholds(self) -> Thresholds:
        return self._thresholds

    @thresholds.setter
    def thresholds(self, value: Thresholds) -> None:
        self._thresholds = value
        self._floor_counts = [limit * value.hot_local_floor_ratio * self._window_s for limit in value.limits()]

    # The per-event path

    def count(self, room: int, kind: int, now: float, n: int = 1) -> None:
        """Count ``n`` events of ``kind`` (:data:`SEND` …) in ``room``. O(1), no allocation
        unless the room is new or was idle for a whole generation."""
        counts = self._young.get(room)
        if counts is None:
            counts = self._adopt(room)
        if now >= counts.end:
            # A new bucket. Inline, not a method: for a quiet room this runs on every event.
            if now < counts.end + self._window_s:  # the next one: the current bucket becomes the previous
                counts.prev, counts.cur = counts.cur, counts.prev
            else:  # two or more buckets idle (a quiet room's usual case): both are empty
                prev = counts.prev
                prev[0] = prev[1] = prev[2] = prev[3] = 0
            cur = counts.cur
            cur[0] = cur[1] = cur[2] = cur[3] = 0
            counts.end = (now * self._per_s // 1.0 + 1.0) * self._window_s
        else:
            cur = counts.cur
        value = cur[kind] + n
        cur[kind] = value
        if not counts.candidate and value >= self._floor_counts[kind]:
            counts.candidate = True
            self._candidates.add(room)

    def _adopt(self, room: int) -> _Counts:
        counts = self._old.pop(room, None) or _Counts()
        if len(self._young) >= self._max_rooms:
            self._rotate()  # churn beyond the cap: forget the rooms idle longest
        self._young[room] = counts
        return counts

    def _rotate(self) -> None:
        self._old, self._young = self._young, {}

    def _counts(self, room: int) -> _Counts | None:
        return self._young.get(room) or self._old.get(room)

    def _watched(self) -> set[int]:
        """The rooms tick() judges: candidates, hot by rates, reported by other nodes."""
        return self._candidates | self._detected.keys() | self._remote.keys()

    def is_hot(self, room: int) -> bool:
        """The effective state (rates or pin), as of the last :meth:`tick` / pin change."""
        return room in self._since

    # Rates

    def local_rates(self, room: int, now: float) -> Rates:
        """This node's rates of ``room`` over the last window."""
        counts = self._counts(room)
        if counts is None:
            return ZERO
        left = (counts.end - now) * self._per_s  # the part of the current bucket still to come
        cur: Sequence[int]
        if 0 < left <= 1:
            cur, prev = counts.cur, counts.prev
        elif -1 < left <= 0:
            cur, prev, left = _EMPTY, counts.cur, left + 1
        else:
            return ZERO
        weight = left  # the part of the previous bucket still in the window: as much as is to come
        per_s = self._per_s
        return Rates(*((c + p * weight) * per_s for c, p in zip(cur, prev, strict=True)))

    def rates(self, room: int, now: float) -> Rates:
        """Cluster-wide rates of ``room``: local plus unexpired remote reports."""
        total = list(self.local_rates(room, now))
        for rates, expires in self._remote.get(room, {}).values():
            if expires > now:
                for kind in range(4):
                    total[kind] += rates[kind]
        return Rates(*total)

    # The cluster

    def candidates(self, now: float) -> dict[int, Rates]:
        """Local rates of the rooms the other nodes should hear about: those above the local
        floor and those hot here by rates (so the cluster keeps seeing a hot room whole)."""
        out = {}
        for room in self._candidates | self._detected.keys():
            local = self.local_rates(room, now)
            if any(local):
                out[room] = local
        return out

    def merge_remote(self, node_id: str, room: int, rates: Rates, now: float) -> None:
        """A report from ``node_id`` of its local rates in ``room``; replaces its previous one.
        Reports beyond ``max_remote_rooms`` rooms are ignored (bounded memory)."""
        if node_id == self._node_id:
            return
        reports = self._remote.get(room)
        if reports is None:
            if len(self._remote) >= self._max_remote_rooms:
                return
            reports = self._remote[room] = {}
        reports[node_id] = (rates, now + self._thresholds.hot_remote_ttl_s)

    # Judging

    def tick(self, now: float) -> list[Transition]:
        """Judge the candidate, hot and remotely reported rooms; forget idle ones. Returns the
        effective transitions, in no particular order. Cost: O(those rooms), never O(all rooms)."""
        if now - self._rotated_at >= self._idle_s:
            self._rotate()
            self._rotated_at = now
        for room in [r for r, reports in self._remote.items() if not self._prune(reports, now)]:
            del self._remote[room]
        limits = self._thresholds.limits()
        floor = [limit * self._thresholds.hot_local_floor_ratio for limit in limits]
        out: list[Transition] = []
        for room in self._watched():
            if room in self._candidates and all(r < f for r, f in zip(self.local_rates(room, now), floor, strict=True)):
                self._candidates.discard(room)
                if (counts := self._counts(room)) is not None:
                    counts.candidate = False
            if (transition := self._judge(room, self.rates(room, now), limits, now)) is not None:
                out.append(transition)
        return out

    @staticmethod
    def _prune(reports: dict[str, tuple[Rates, float]], now: float) -> bool:
        """Drop expired reports; True while any is left."""
        for node in [n for n, (_, expires) in reports.items() if expires <= now]:
            del reports[node]
        return bool(reports)

    def _judge(self, room: int, rates: Rates, limits: Rates, now: float) -> Transition | None:
        if room not in self._detected:
            if any(r >= limit for r, limit in zip(rates, limits, strict=True)):
                self._detected[room] = now
                return self._effective(room, now, "rates")
            return None
        cool_line = self._thresholds.hot_cool_ratio
        if all(r < limit * cool_line for r, limit in zip(rates, limits, strict=True)):
            below = self._below.setdefault(room, now)
            if now - below >= self._thresholds.hot_cool_s:
                del self._detected[room], self._below[room]
                return self._effective(room, now, "rates")
        else:
            self._below.pop(room, None)  # back above the line: the cool-down starts over
        return None

    def _effective(self, room: int, now: float, cause: str) -> Transition | None:
        """Bring ``_since`` in line with the pin or the rates; the transition if it moved."""
        pin = self._pins.get(room)
        hot = pin if pin is not None else room in self._detected
        if hot == (room in self._since):
            return None
        if hot:
            self._since[room] = now
        else:
            del self._since[room]
        return Transition(room, hot, now, cause)

    # Operators

    def pin(self, room: int, hot: bool, now: float) -> Transition | None:
        """Force ``room`` hot (protection on) or not hot (off) until :meth:`unpin`.
        Raises ValueError past ``max_pins`` pinned rooms."""
        if room not in self._pins and len(self._pins) >= self._max_pins:
            raise ValueError(f"at most {self._max_pins} rooms may be pinned")
        self._pins[room] = hot
        return self._effective(room, now, "pin")

    def unpin(self, room: int, now: float) -> Transition | None:
        """Let ``room`` follow its rates again."""
        self._pins.pop(room, None)
        return self._effective(room, now, "unpin")

    def snapshot(self, now: float) -> dict[int, RoomState]:
        """Every room the detector is watching (candidates, hot, reported, pinned), for the ops API."""
        rooms = self._watched() | self._pins.keys()
        return {room: RoomState(self.rates(room, now), self.local_rates(room, now), self._since.get(room), self._pins.get(room)) for room in rooms}

    @property
    def tracked(self) -> int:
        """Rooms with counters in memory (both generations)."""
        return len(self._young) + len(self._old)
