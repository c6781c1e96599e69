"""Presence as pure state: device events and an injected ``now`` in, transitions out.

No I/O and no asyncio: every event and sweep takes the time (ms since the Unix epoch) it
should act at, so timeouts are tested without sleeping and every store computes the same thing.

Contract (the Redis store's scripts implement the same rules; one contract suite checks both):

* A **heartbeat** from a device records it (the first one is the socket's hello) with a
  deadline of ``last heartbeat + timeout_ms``.
* A **clean close** removes that device at once. A close of an unknown device changes nothing.
* **Expiry** (the sweeper) removes devices whose deadline is before ``now``. Until then an
  abruptly dropped device stays recorded, so a network drop shorter than the timeout never
  flaps the user; a dropped device is gone one sweep after its deadline.
* A user is **online** while any device is recorded. :class:`Transition` values report exactly
  the changes of that (online when the first device appears, offline when the last one is
  closed or expired), so per user they alternate online/offline, starting with online; queries
  read the same state, so what a watcher was pushed and what anyone asks agree.
* ``last_seen``: for an offline user, the latest heartbeat or clean close of any of their
  devices, kept for ``retention_ms``; for an online user, a time they were seen online (at least
  when they came online; plain heartbeats do not move it, so a heartbeat writes one value);
  ``None`` for a user never seen.
* **Clock jumps.** A ``now`` earlier than a recorded time never moves a deadline or
  ``last_seen`` backwards (times only grow: ``max``). A forward jump expires stale devices at
  the next sweep.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

Status = Literal["online", "offline"]
ONLINE: Final = "online"
OFFLINE: Final = "offline"

EventKind = Literal["heartbeat", "close"]
HEARTBEAT: Final = "heartbeat"
CLOSE: Final = "close"

# How long ``last_seen`` outlives a user's last device: long enough for "last seen 3 weeks ago".
RETENTION_MS: Final = 30 * 24 * 3600 * 1000


class DeviceEvent(NamedTuple):
    """A heartbeat (the first one of a device is its hello) or a clean close, at ``at_ms``.

    A named tuple: a flush builds one per device (thousands) on the node's event loop."""

    user: str
    device: str  # one per socket, never reused after its close
    at_ms: int
    kind: EventKind = HEARTBEAT


@dataclass(frozen=True, slots=True)
class Transition:
    """A user's status changed; ``last_seen`` is the user's last seen time after the change."""

    user: str
    status: Status
    last_seen: int

    def to_wire(self) -> dict[str, object]:
        """The ``presence {user, status, last_seen}`` frame's fields."""
        return {"user": self.user, "status": self.status, "last_seen": self.last_seen}


class UserPresence(NamedTuple):
    """A user's presence as queried: ``last_seen`` is None for a user never seen.

    A named tuple, not a frozen dataclass: a query builds one per user asked (up to thousands),
    and a frozen dataclass's __init__ costs several times as much."""

    status: Status
    last_seen: int | None

    def to_wire(self) -> dict[str, object]:
        return {"status": self.status, "last_seen": self.last_seen}


NEVER_SEEN: Final = UserPresence(OFFLINE, None)


@dataclass(frozen=True, slots=True)
class Expiry:
    """What one bounded sweep removed: offline transitions, and whether more devices may be due."""

    transitions: list[Transition]
    more: bool


@dataclass(frozen=True, slots=True)
class OnlineSample:
    """How many of a set of users are online, and up to a limit of them (in the order asked)."""

    count: int
    users: list[str]

    def to_wire(self) -> dict[str, object]:
        """The body of ``GET /v1/channels/{id}/presence``."""
        return {"online": self.count, "users": self.users}


class PresenceState:
    """Every user's devices and last_seen, changed only by events at a given ``now``."""

    def __init__(self, timeout_ms: int, *, retention_ms: int = RETENTION_MS) -> None:
        if timeout_ms <= 0 or retention_ms < timeout_ms:
            raise ValueError("need 0 < timeout_ms <= retention_ms")
        self.timeout_ms = timeout_ms
        self.retention_ms = retention_ms
        # user → {device: last heartbeat ms}; a user with no recorded device is absent.
        self._devices: dict[str, dict[str, int]] = {}
        # user → last seen ms, for online and offline users alike.
        self._last_seen: dict[str, int] = {}
        # Offline users in the order they went offline, so last_seen past retention is pruned
        # from the front in O(pruned) instead of scanning every user ever seen.
        self._offline: OrderedDict[str, None] = OrderedDict()
        # Min-heap of (deadline, user, device), one entry per device, pushed when the device
        # appears: a popped entry whose device has heartbeated since is pushed again with its
        # current deadline, so the sweep costs O(due) and heartbeats cost no heap work.
        self._deadlines: list[tuple[int, str, str]] = []

    # Events

    def apply(self, events: Iterable[DeviceEvent]) -> list[Transition]:
        """Apply heartbeats and closes in order; the transitions they caused, in order."""
        out: list[Transition] = []
        for event in events:
            handle = self.heartbeat if event.kind == HEARTBEAT else self.close
            change = handle(event.user, event.device, event.at_ms)
            if change is not None:
                out.append(change)
        return out

    def heartbeat(self, user: str, device: str, now: int) -> Transition | None:
        """A device heartbeated (or said hello): an online transition if the user had no device."""
        devices = self._devices.get(user)
        if devices is not None:
            last = devices.get(device)
            if last is None:
                devices[device] = now
                heapq.heappush(self._deadlines, (now + self.timeout_ms, user, device))
            elif now > last:
                devices[device] = now  # an earlier `now` (clock stepped back) keeps the later time
            return None
        self._devices[user] = {device: now}
        heapq.heappush(self._deadlines, (now + self.timeout_ms, user, device))
        self._offline.pop(user, None)
        return Transition(user, ONLINE, self._see(user, now))

    def close(self, user: str, device: str, now: int) -> Transition | None:
        """A device closed cleanly: gone at once; offline transition if it was the last one."""
        devices = self._devices.get(user)
        if devices is None or device not in devices:
            return None
        last = devices.pop(device)
        seen = self._see(user, max(now, last))
        if devices:
            return None
        self._went_offline(user)
        return Transition(user, OFFLINE, seen)

    def expire(self, now: int, limit: int) -> Expiry:
        """Remove up to ``limit`` devices whose deadline is before ``now`` (the sweeper)."""
        out: list[Transition] = []
        removed = 0
        heap = self._deadlines
        while heap and heap[0][0] < now and removed < limit:
            _, user, device = heapq.heappop(heap)
            devices = self._devices.get(user)
            last = devices.get(device) if devices is not None else None
            if devices is None or last is None:
                continue  # closed (or already expired) since the entry was pushed
            if last + self.timeout_ms >= now:
                heapq.heappush(heap, (last + self.timeout_ms, user, device))  # heartbeated since
                continue
            del devices[device]
            removed += 1
            seen = self._see(user, last)
            if not devices:
                self._went_offline(user)
                out.append(Transition(user, OFFLINE, seen))
        self._prune(now)
        return Expiry(out, bool(heap) and heap[0][0] < now)

    # Queries

    def presence(self, user: str) -> UserPresence:
        """Online iff a device is recorded (see the module docstring for ``last_seen``)."""
        seen = self._last_seen.get(user)
        if seen is None:
            return NEVER_SEEN
        return UserPresence(ONLINE if user in self._devices else OFFLINE, seen)

    def online_among(self, users: Sequence[str], limit: int) -> OnlineSample:
        """How many of ``users`` are online, and the first ``limit`` of them."""
        online = [u for u in dict.fromkeys(users) if u in self._devices]
        return OnlineSample(len(online), online[:limit])

    def devices(self, user: str) -> dict[str, int]:
        """The user's recorded devices and their last heartbeats (a copy)."""
        return dict(self._devices.get(user, {}))

    # Internals

    def _see(self, user: str, now: int) -> int:
        seen = self._last_seen.get(user)
        if seen is None or now > seen:
            self._last_seen[user] = seen = now
        return seen

    def _went_offline(self, user: str) -> None:
        del self._devices[user]
        self._offline[user] = None
        self._offline.move_to_end(user)

    def _prune(self, now: int) -> None:
        # Users went offline roughly in last_seen order; one that is out of order is pruned a
        # little late (by at most a timeout), never early.
        offline, seen = self._offline, self._last_seen
        while offline:
            user = next(iter(offline))
            if seen[user] + self.retention_ms >= now:
                break
            del offline[user]
            del seen[user]
