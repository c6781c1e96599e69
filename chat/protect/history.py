"""History reads of protected rooms: served from a window of recent messages, identical
concurrent reads sharing one storage query, and store reads per room under a limit.

A room's window (:class:`~chat.hot.window.RecentWindow`) opens on the first read while the room
is protected: a tap (a hub subscriber that takes nothing) keeps this node subscribed to the
room's relay topic — so every message published from then on reaches the window through the
hub's policy, this node's own sends through :meth:`HistoryCache.stored` before their ack — and
then one read of the room's newest messages fills it. A relay gap on the topic resets it (filled
again on the next read); the room cooling closes it.

A read the window cannot answer exactly goes to the store, unless the same read (same room,
cursors and limit) is already under way: then it waits for that one's answer (bounded). A store
read of a protected room first takes a token from the room's fetch limit (``throttled`` with
``retry_after_ms`` when there is none); reads answered from memory or shared take none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import orjson

from chat.errors import ChatError, Throttled, Unavailable
from chat.guards import ReadPage
from chat.hot.limits import RoomLimiter
from chat.hot.window import RecentWindow
from chat.hub import Hub
from chat.ids import timestamp_ms
from chat.models import Message, Page
from chat.protect.counters import Counters
from chat.protect.listen import Listener
from chat.protect.writes import MESSAGE_OVERHEAD, fresh

log = logging.getLogger(__name__)

_Key = tuple[int, int | None, int | None, int]


class _Tap(Listener):
    """A hub subscriber holding a room's relay interest for its window; delivers nothing."""

    def __init__(self, room: int, on_gap: Callable[[int], None]) -> None:
        super().__init__(f"history-window-{room}")
        self.room = room
        self._on_gap = on_gap
        self.window: RecentWindow[Message] = RecentWindow(max_messages=1000, max_bytes=4 << 20)
        self.filling: asyncio.Future[None] | None = None  # the fill under way or done (None: to do)

    def gap(self, channel: int) -> None:
        self._on_gap(channel)


class HistoryCache:
    """Windows and shared reads of protected rooms (see the module docstring)."""

    def __init__(self, *, counters: Counters, clock: Callable[[], float] = time.monotonic, wait_s: float = 5.0) -> None:
        self._counters = counters
        self._clock = clock
        self.wait_s = wait_s  # the longest a read waits for one it shares
        # Dynamic settings
        self.windows_on = True  # hot_history_window
        self.limits_on = True  # hot_room_limits
        self.max_messages, self.max_bytes = 1000, 4 << 20
        self.fetches = RoomLimiter(per_s=20.0, burst=20)
        self._hub: Hub | None = None
        self._taps: dict[int, _Tap] = {}
        self._reads: dict[_Key, asyncio.Future[Page]] = {}  # reads under way

    def start(self, hub: Hub) -> None:
        self._hub = hub

    async def close(self) -> None:
        for room in list(self._taps):
            await self.forget(room)

    # Feeding the windows

    def live(self, channel: int, message_id: int, frame: bytes) -> None:
        """A live message of a protected room (from the hub's policy)."""
        tap = self._taps.get(channel)
        if tap is None:
            return
        try:
            wire = orjson.loads(frame)["message"]
            message = Message(message_id, channel, wire["sender"], wire["text"], timestamp_ms(message_id), wire["client_msg_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("history window: could not read a message frame of room %d; resetting it", channel)
            self._reset(channel)
            return
        tap.window.add(message_id, message, len(frame))

    def stored(self, message: Message) -> None:
        """A message sent through this node is durable (before its ack, so its sender reads it back)."""
        tap = self._taps.get(message.channel)
        if tap is not None:
            tap.window.add(message.id, message, len(message.text) + MESSAGE_OVERHEAD)

    def _reset(self, room: int) -> None:
        tap = self._taps.get(room)
        if tap is not None:
            tap.window.reset()
            tap.filling = None

    def resize(self, max_messages: int, max_bytes: int) -> None:
        """New window bounds (dynamic settings), for the open windows too (trimmed at their next message)."""
        self.max_messages, self.max_bytes = max_messages, max_bytes
        for tap in self._taps.values():
            tap.window.max_messages, tap.window.max_bytes = max_messages, max_bytes

    def rooms(self) -> list[int]:
        """Rooms with a window open."""
        return list(self._taps)

    async def forget(self, room: int) -> None:
        """The room is not protected any more: close its window."""
        self.fetches.forget(room)
        tap = self._taps.pop(room, None)
        if tap is not None and self._hub is not None:
            await self._hub.leave_channel(room, tap)

    # Reading

    async def read(self, channel: int, before: int | None, after: int | None, limit: int, store: ReadPage) -> Page:
        """A page of a protected room's history (see the module docstring)."""
        if self.windows_on and self._hub is not None:
            tap = self._taps.get(channel) or await self._open(channel)
            if tap.filling is None:
                tap.filling = asyncio.ensure_future(self._fill(tap, store))
            filling = tap.filling
            try:
                await asyncio.wait_for(asyncio.shield(filling), self.wait_s)
            except (ChatError, TimeoutError):
                if filling.done() and tap.filling is filling:
                    tap.filling = None  # failed: the next read tries again; this one asks the store
            page = tap.window.page(before=before, after=after, limit=limit)
            if page is not None:
                self._counters.window_hits += 1
                return Page(page.items, page.has_more)
            self._counters.window_misses += 1
        return await self._shared(channel, before, after, limit, store)

    async def _open(self, room: int) -> _Tap:
        assert self._hub is not None
        tap = self._taps[room] = _Tap(room, self._reset)
        tap.window.max_messages, tap.window.max_bytes = self.max_messages, self.max_bytes
        try:
            await self._hub.join_channel(room, tap)  # returns once the relay delivers the room here
        except ChatError:
            self._taps.pop(room, None)
            raise
        return tap

    async def _fill(self, tap: _Tap, store: ReadPage) -> None:
        page = await self._shared(tap.room, None, None, min(tap.window.max_messages, 1000), store)
        if self._taps.get(tap.room) is tap:
            tap.window.fill([(m.id, m, len(m.text) + MESSAGE_OVERHEAD) for m in page.messages], page.has_more)

    async def _shared(self, channel: int, before: int | None, after: int | None, limit: int, store: ReadPage) -> Page:
        key = (channel, before, after, limit)
        under_way = self._reads.get(key)
        if under_way is not None:
            self._counters.reads_coalesced += 1
            try:
                return await asyncio.wait_for(asyncio.shield(under_way), self.wait_s)
            except TimeoutError:
                raise Unavailable("history read timed out", retry_after_ms=1000) from None
            except ChatError as error:
                raise fresh(error) from None
        if self.limits_on:
            refused = self.fetches.take(channel, self._clock())
            if refused is not None:
                self._counters.fetches_throttled += 1
                raise Throttled("this room's history is read too often; try again shortly", retry_after_ms=refused)
        future: asyncio.Future[Page] = asyncio.get_running_loop().create_future()
        self._reads[key] = future
        try:
            page = await store(channel, before, after, limit)
        except ChatError as error:
            future.set_exception(fresh(error))
            future.exception()  # retrieved: nobody else may be waiting
            raise
        except BaseException:
            future.set_exception(Unavailable("history read was abandoned", retry_after_ms=100))
            future.exception()
            raise
        finally:
            self._reads.pop(key, None)
        future.set_result(page)
        return page
