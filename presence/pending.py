"""The writes a node has recorded and not yet sent to the store: pure, no I/O, no asyncio.

Contract (the tracker drives it; times are given, never read from a clock here):

* Per device, only the **newest heartbeat** waits (a newer one replaces it); a **clean close**
  waits beside it, and a batch lists heartbeats before closes, so a close always wins (a
  device id is one socket's and never comes back after its close).
* **Bounded**: at most ``max_pending`` devices wait. Past it a new device is refused (counted
  in ``dropped``); a device already waiting is still updated.
* :meth:`PendingWrites.take` hands out a batch of at most ``limit`` entries (closes first, each
  with its device's waiting heartbeat); :meth:`~PendingWrites.restore` puts a batch that was not
  written back behind anything newer; :meth:`~PendingWrites.written` settles one that was.
* **Read your own writes**: hellos not yet written are remembered per user, so
  :meth:`~PendingWrites.overlay` can correct a store answer for users who just connected (or
  connected and left) on this node.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from presence.state import CLOSE, OFFLINE, ONLINE, DeviceEvent, Status, UserPresence

Device = tuple[str, str]  # (user, device)


@dataclass(slots=True)
class Batch:
    """Entries taken for one store call: newest heartbeat per device, and clean closes."""

    beats: dict[Device, int] = field(default_factory=dict)
    closes: dict[Device, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.beats) + len(self.closes)

    def events(self, chunk: int) -> Iterator[list[DeviceEvent]]:
        """The batch as events, heartbeats first, ``chunk`` at a time (the caller may yield
        to its loop between chunks)."""
        beats = iter(self.beats.items())
        while part := list(itertools.islice(beats, chunk)):
            yield [DeviceEvent(user, device, at) for (user, device), at in part]
        if self.closes:
            yield [DeviceEvent(user, device, at, CLOSE) for (user, device), at in self.closes.items()]


class PendingWrites:
    """What this node recorded and has not written yet (see the module docstring)."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._waiting = Batch()
        # Devices whose hello is not written yet, user → {device: (ms of its latest event,
        # closed?)}: this node's queries see them before the store does.
        self._fresh: dict[str, dict[str, tuple[int, bool]]] = {}
        self.dropped = 0  # entries refused because max_pending devices were waiting

    def __len__(self) -> int:
        return len(self._waiting)

    @property
    def full(self) -> bool:
        return len(self._waiting) >= self.max_pending

    # Recording

    def beat(self, user: str, device: str, at: int, *, hello: bool = False) -> bool:
        """A heartbeat (``hello``: the socket's first); False if refused (full)."""
        key = (user, device)
        beats = self._waiting.beats
        if key not in beats and not self._room():
            return False
        beats[key] = at
        if hello:
            self._fresh.setdefault(user, {})[device] = (at, False)
        return True

    def close(self, user: str, device: str, at: int) -> bool:
        """A clean close; False if refused (full): the device is then left to its timeout."""
        key = (user, device)
        closes = self._waiting.closes
        if key not in closes and not self._room():
            return False
        closes[key] = at
        fresh = self._fresh.get(user)
        if fresh is not None and device in fresh:
            fresh[device] = (at, True)
        return True

    def _room(self) -> bool:
        if len(self._waiting) < self.max_pending:
            return True
        self.dropped += 1
        return False

    # Batches

    def take(self, limit: int) -> Batch:
        """Up to ``limit`` entries for one store call: all of them if they fit, else closes
        first, each with its device's waiting heartbeat, then heartbeats."""
        waiting = self._waiting
        if len(waiting) <= limit:
            self._waiting = Batch()
            return waiting
        batch = Batch()
        for key in list(itertools.islice(waiting.closes, max(1, limit // 2))):
            batch.closes[key] = waiting.closes.pop(key)
            if key in waiting.beats:
                batch.beats[key] = waiting.beats.pop(key)
        for key in list(itertools.islice(waiting.beats, max(0, limit - len(batch)))):
            batch.beats[key] = waiting.beats.pop(key)
        return batch

    def restore(self, batch: Batch) -> None:
        """A batch that was not written waits again, behind anything newer recorded meanwhile."""
        waiting = self._waiting
        for key, at in batch.beats.items():
            if key not in waiting.beats and self._room():
                waiting.beats[key] = at
        for key, at in batch.closes.items():
            if key not in waiting.closes and self._room():
                waiting.closes[key] = at

    def written(self, batch: Batch) -> None:
        """The store has the batch: its hellos are no longer this node's alone."""
        for user, devices in list(self._fresh.items()):
            for device in [d for d in devices if (user, d) in batch.beats]:
                del devices[device]
            if not devices:
                del self._fresh[user]

    # Reading

    def overlay(self, result: dict[str, UserPresence]) -> None:
        """Correct a store answer with this node's hellos (and their closes) not yet written."""
        for user in self._fresh.keys() & result.keys():
            current = result[user]
            if current.status == ONLINE:
                continue
            devices = self._fresh[user].values()
            seen = max(at for at, _ in devices)
            status: Status = OFFLINE if all(closed for _, closed in devices) else ONLINE
            result[user] = UserPresence(status, max(seen, current.last_seen or seen))
