"""The hub's fan-out policy: counts every room's fan-out, coalesces protected rooms' live
messages into ``messages`` batch frames, drops their typing and presence pushes.

For a quiet room a live message costs one detector count and one dict lookup here. A protected
room's message (coalescing on, local subscribers present) goes to the
:class:`~chat.hot.coalescer.Coalescer` instead of to the sockets; one timer (the earliest open
batch's deadline, never one per room or per message) hands due batches back to the hub, each
encoded once as a :class:`~chat.protocol.BatchFrame` for every local socket of the room. When a
room stops being protected, or coalescing is switched off, its open batch is delivered first
(:meth:`FanoutGuard.flush`), so no later message overtakes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from chat import events
from chat.hot.coalescer import Batch, Coalescer, CoalescerConfig, batch_frame, message_object
from chat.hot.detector import FANOUT
from chat.hub import Hub
from chat.protect.counters import Counters
from chat.protect.rooms import HotRooms
from chat.protocol import BatchFrame

#: Sees every live message of a room with a history window (chat.protect.history).
LiveTap = Callable[[int, int, bytes], None]


class FanoutGuard:
    """The hub's :class:`~chat.guards.FanoutPolicy` (see the module docstring)."""

    def __init__(
        self, rooms: HotRooms, *, counters: Counters, tap: LiveTap, config: CoalescerConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rooms = rooms
        self._counters = counters
        self._tap = tap
        self._clock = clock
        self.coalescer = Coalescer(config)
        # Kill switches (dynamic settings hot_coalescing, hot_suppress_ephemeral).
        self.coalescing = True
        self.suppress = True
        self._hub: Hub | None = None  # set by start(): the hub is built with this policy
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def start(self, hub: Hub) -> None:
        self._hub = hub

    def close(self) -> None:
        self.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # FanoutPolicy

    def message(self, channel: int, message_id: int, frame: bytes, recipients: int) -> bool:
        now = self._clock()
        rooms = self._rooms
        rooms.detector.count(channel, FANOUT, now, recipients)
        if not rooms.protected(channel):
            return False
        self._tap(channel, message_id, frame)
        if not self.coalescing or self._hub is None:
            return False
        for batch in self.coalescer.add(channel, message_id, message_object(frame), now):
            self._deliver(batch)
        self._arm(now)
        return True

    def ephemeral(self, channel: int, kind: str) -> bool:
        if not (self.suppress and self._rooms.protected(channel)):
            return False
        if kind == events.TYPING:
            self._counters.typing_suppressed += 1
        else:
            self._counters.presence_suppressed += 1
        return True

    # Batches

    def flush(self, room: int | None = None) -> None:
        """Deliver ``room``'s open batch now (None: every room's)."""
        for batch in self.coalescer.flush(room):
            self._deliver(batch)

    def _arm(self, now: float) -> None:
        deadline = now + self.coalescer.config.window_s  # a batch opened now is due then; older ones sooner
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = asyncio.get_running_loop().call_later(max(0.0, deadline - now), self._due), deadline

    def _due(self) -> None:
        self._timer = None
        now = self._clock()
        batches, next_at = self.coalescer.due(now)
        for batch in batches:
            self._deliver(batch)
        if next_at is not None:
            self._timer, self._timer_at = asyncio.get_running_loop().call_later(max(0.0, next_at - now), self._due), next_at

    def _deliver(self, batch: Batch) -> None:
        if self._hub is None:
            return
        self._counters.batch_frames += 1
        self._counters.coalesced_messages += len(batch.ids)
        self._hub.deliver_batch(batch.room, BatchFrame(batch_frame(batch), batch.ids, batch.payloads))
