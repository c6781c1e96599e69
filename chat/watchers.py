"""Presence transitions, carried to the sockets that watch them.

A transition (a user went online or offline) is reported by exactly one node — the one whose
write or sweep caused it — which publishes it on the relay:

* on the channel topic of each **small** channel of the user (a DM, or a group or room with at
  most ``fanout_max`` members): every socket subscribed to it is a DM partner or a member of a
  small channel, so it gets a ``presence {user, status, last_seen}`` frame. Larger channels get
  nothing: one member of a 100,000-member room going offline costs no fan-out at all (members
  ask with ``GET /v1/channels/{id}/presence`` or the ``presence`` op);
* on the user's presence topic ``p:<user>``, for sockets that asked with ``presence_subscribe``.

A socket that shares several small channels with the user gets one frame per channel on the
wire of the relay; its :class:`~chat.delivery.Delivery` passes on only the first (the envelope
carries the transition's stamp). Which of a user's channels are small is cached for
``cache_ttl_s``; transitions wait in a bounded queue (presence is best effort: past the bound
the oldest are dropped, with one warning).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from chat import events, protocol
from chat.errors import ChatError
from chat.models import ChannelKind
from chat.relay.base import Relay, channel_topic, presence_topic
from chat.store.base import MessageStore
from presence.state import Transition

log = logging.getLogger(__name__)

QUEUE_MAX = 10_000
CACHE_TTL_S = 30.0
CACHE_MAX = 100_000


def stamp(transition: Transition) -> int:
    """A number that tells one transition of a user from another (for de-duplication)."""
    return transition.last_seen * 2 + (1 if transition.status == "online" else 0)


class PresenceFanout:
    """Publishes every transition this node reports (see the module docstring)."""

    def __init__(
        self,
        *,
        store: MessageStore,
        relay: Relay,
        fanout_max: int,
        cache_ttl_s: float = CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._relay = relay
        self._fanout_max = fanout_max
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._queue: deque[Transition] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # user → (expires, small channels); channel → (expires, small?)
        self._user_channels: dict[str, tuple[float, list[int]]] = {}
        self._small: dict[int, tuple[float, bool]] = {}
        self._dropping = False

    def transition(self, transition: Transition) -> None:
        """The tracker's ``on_transition``: queue it (never blocks)."""
        if len(self._queue) >= QUEUE_MAX:
            self._queue.popleft()
            if not self._dropping:
                self._dropping = True
                log.warning("presence fan-out is behind: dropping the oldest transitions")
        self._queue.append(transition)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="presence-fanout")
        self._wake.set()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._dropping = False
                self._wake.clear()
                await self._wake.wait()
                continue
            transition = self._queue.popleft()
            try:
                await self._publish(transition)
            except ChatError as error:  # relay or store down: this transition is lost, watchers can ask
                log.debug("presence transition of %s not published: %s", transition.user, error.message)
            except Exception:
                log.exception("presence fan-out failed for %s", transition.user)

    async def _publish(self, transition: Transition) -> None:
        frame = protocol.encode("presence", transition.to_wire())
        mark = stamp(transition)
        user = transition.user
        for channel in await self.small_channels(user):
            await self._relay.publish(channel_topic(channel), events.pack(events.PRESENCE, channel, mark, user, frame))
        await self._relay.publish(presence_topic(user), events.pack(events.PRESENCE, 0, mark, user, frame))

    async def small_channels(self, user: str) -> list[int]:
        """The user's channels whose members all get the user's presence pushed."""
        now = self._clock()
        cached = self._user_channels.get(user)
        if cached is not None and cached[0] > now:
            return cached[1]
        small = []
        for channel in await self._store.list_user_channels(user):
            if channel.kind is ChannelKind.DM or await self._is_small(channel.id, now):
                small.append(channel.id)
        if len(self._user_channels) >= CACHE_MAX:
            self._user_channels.clear()  # rare; a cold cache only costs reads
        self._user_channels[user] = (now + self._cache_ttl_s, small)
        return small

    async def _is_small(self, channel: int, now: float) -> bool:
        cached = self._small.get(channel)
        if cached is not None and cached[0] > now:
            return cached[1]
        # A bounded read: a huge room is never counted in full.
        small = len(await self._store.list_members(channel, limit=self._fanout_max + 1)) <= self._fanout_max
        if len(self._small) >= CACHE_MAX:
            self._small.clear()
        self._small[channel] = (now + self._cache_ttl_s, small)
        return small
