"""One node's hot-room protection: builds the parts, applies dynamic settings, runs the tick,
and implements the core's ports (:mod:`chat.guards`).

Per send (``admit_send``, before the ID is minted): count it; a bot over ``bot_send_per_s`` →
``rate_limited``; a protected room over its send limit → ``throttled``; the store's breaker
CRITICAL → ``unavailable`` (nothing is tried); then its storage lane. A protected room's message
is then written in a batch when batching is on. Every refusal comes before anything is stored,
with ``retry_after_ms``.

The tick (every 250 ms, one task): the detector judges rooms (acting on every transition: a
cooled room's open batch is delivered, its limits forgotten, its window closed, its line let in),
the breakers re-judge as their windows slide and calls in flight for too long count as slow, and
every other tick this node's candidate rooms are reported to the others. A settings change
reaches :meth:`Protection.apply` within a second on every node (``Discovery.config``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from chat import dynamic, events
from chat.errors import RateLimited, Throttled, Unavailable
from chat.guards import ReadPage
from chat.hot.breaker import Breaker, Health
from chat.hot.breaker import Transition as BreakerTransition
from chat.hot.detector import FETCH, JOIN, SEND, Transition
from chat.hot.limits import RoomLimiter, lane_for
from chat.hub import Hub
from chat.models import ChannelKind, Message, Page
from chat.protect.breakers import GuardedRelay, GuardedStore
from chat.protect.counters import Counters
from chat.protect.fanout import FanoutGuard
from chat.protect.history import HistoryCache
from chat.protect.joins import JoinGate
from chat.protect.rooms import REPORT_TOPIC, HotRooms, RoomView
from chat.protect.writes import Orphaned, Writes
from chat.ratelimit import KeyedLimiter
from chat.relay.base import Relay
from chat.store.base import MessageStore
from chat.waiting.base import LineRules, WaitingRooms
from discovery.config.base import ConfigStore
from discovery.config.schema import Value

log = logging.getLogger(__name__)

TICK_S = 0.25
REPORT_EVERY = 2  # ticks: reports every 0.5 s


class Protection:
    """Hot-room protection of one node (see the module docstring). Build it before the hub and
    the services; use :attr:`store` and :attr:`relay` (with a breaker in front when ``guard_store``,
    ``guard_relay``: the real backends)."""

    def __init__(
        self,
        *,
        node_id: str,
        store: MessageStore,
        relay: Relay,
        lines: WaitingRooms,
        guard_store: bool,
        guard_relay: bool,
        wait_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counters = Counters()
        self._clock = clock
        settings = dynamic.values(dynamic.SCHEMA.defaults())
        self.store_breaker = Breaker("cassandra", settings.cassandra_breaker)
        self.relay_breaker = Breaker("redis", settings.redis_breaker)
        # Breakers only in front of the real (remote) backends; the embedded ones have their own bounds.
        self._guarded: list[GuardedStore | GuardedRelay] = []
        if guard_store:
            guarded_store = GuardedStore(store, self.store_breaker, clock=clock, on_transition=self._health)
            self._guarded.append(guarded_store)
            store = guarded_store
        if guard_relay:
            guarded_relay = GuardedRelay(relay, self.relay_breaker, clock=clock, on_transition=self._health)
            self._guarded.append(guarded_relay)
            relay = guarded_relay
        self.store: MessageStore = store
        self.relay: Relay = relay
        self._lines = lines
        self.rooms = HotRooms(node_id=node_id, relay=relay, counters=self.counters, on_transition=self._transition, is_room=self._is_room, clock=clock)
        self.writes = Writes(store, counters=self.counters, wait_s=wait_s, clock=clock)
        self.reads = HistoryCache(counters=self.counters, clock=clock, wait_s=wait_s)
        self.fanout = FanoutGuard(self.rooms, counters=self.counters, tap=self.reads.live, clock=clock)
        self.joins = JoinGate(self.rooms, lines, relay, counters=self.counters, clock=clock)
        self.sends = RoomLimiter(per_s=100.0, burst=100)
        self.bot_sends = KeyedLimiter(500.0, 1000)
        self.batching = True
        self.limits_on = True
        self._unsubscribe: Callable[[], None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._applied: dict[str, Value] = {}  # the values applied last (changes are logged)
        self.apply(dynamic.SCHEMA.defaults())

    # Lifecycle

    async def start(self, hub: Hub, config: ConfigStore) -> None:
        """Follow ``config`` (read now, and on every change), join the reports topic, start the tick."""
        self.apply(config.snapshot().values)
        self._unsubscribe = config.subscribe(lambda snapshot: self.apply(snapshot.values))  # on the loop, within a second
        self.fanout.start(hub)
        self.reads.start(hub)
        self.writes.start()
        await hub.join_topic(REPORT_TOPIC, self.rooms)
        self._ticker = asyncio.create_task(self._run(), name="hot-rooms-tick")

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.rooms.close()
        self.fanout.close()
        await self.writes.close()
        await self.joins.close()
        await self.reads.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._lines.close()

    async def _run(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(TICK_S)
            ticks += 1
            self.tick(report=ticks % REPORT_EVERY == 0)

    def tick(self, *, report: bool = True) -> None:
        """One tick (see the module docstring); the task calls it every TICK_S, tests directly."""
        now = self._clock()
        self.rooms.tick(now)
        for guarded in self._guarded:
            guarded.age(now)
            self._health(guarded.breaker.poll(now))
        if report:
            self._spawn(self.rooms.report(now))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # Dynamic settings

    def apply(self, values: Mapping[str, Value]) -> None:
        """Adopt every setting's value (a snapshot); an inconsistent set is ignored with a warning
        (the store refuses such changes; this guards against a document written by another version)."""
        try:
            v = dynamic.values(values)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("hot-room settings not applied: %s", exc)
            return
        changed = {k: x for k, x in values.items() if self._applied.get(k, x) != x}
        if changed:
            log.info("dynamic settings applied: %s", ", ".join(f"{k}={x}" for k, x in sorted(changed.items())))
        self._applied = dict(values)
        f = v.flags
        self.rooms.detector.thresholds = v.thresholds
        self.store_breaker.config, self.relay_breaker.config = v.cassandra_breaker, v.redis_breaker
        self.writes.lanes.config, self.writes.batcher.config = v.lanes, v.batcher
        self.fanout.coalescer.config = v.coalescer
        if self.fanout.coalescing and not f["hot_coalescing"]:
            self.fanout.flush()  # what was gathered goes before anything delivered directly
        self.fanout.coalescing, self.fanout.suppress = bool(f["hot_coalescing"]), bool(f["hot_suppress_ephemeral"])
        self.batching, self.limits_on = bool(f["hot_batching"]), bool(f["hot_room_limits"])
        self.sends.per_s, self.sends.burst = float(f["hot_room_send_per_s"]), int(f["hot_room_send_burst"])
        if (self.bot_sends.rate, self.bot_sends.burst) != (f["bot_send_per_s"], f["bot_send_burst"]):
            self.bot_sends = KeyedLimiter(float(f["bot_send_per_s"]), int(f["bot_send_burst"]))
        history = self.reads
        if history.windows_on and not f["hot_history_window"]:
            for room in history.rooms():
                self._spawn(history.forget(room))  # switched off: close the windows (and their subscriptions)
        history.limits_on, history.windows_on = self.limits_on, bool(f["hot_history_window"])
        history.fetches.per_s, history.fetches.burst = float(f["hot_room_fetch_per_s"]), int(f["hot_room_fetch_burst"])
        history.resize(int(f["hot_window_messages"]), int(f["hot_window_bytes"]))
        joins = self.joins
        if joins.waiting_room and not f["hot_waiting_room"]:
            for room in joins.lines():
                self._spawn(joins.cooled(room))  # switched off: whoever waits is let in
        joins.waiting_room, joins.limits_on = bool(f["hot_waiting_room"]), self.limits_on
        budget = int(f["hot_room_join_per_s"])
        joins.rules = LineRules(budget, int(f["hot_waiting_max_queue"]), float(f["hot_ticket_ttl_s"]), float(f["hot_waiting_entry_ttl_s"]))
        joins.limiter.per_s, joins.limiter.burst = float(budget), budget

    # Transitions

    def _transition(self, transition: Transition) -> None:
        if not transition.hot:
            self._cool(transition.room)

    def _cool(self, room: int) -> None:
        self.fanout.flush(room)  # before any direct delivery of its next message
        self.sends.forget(room)
        self.joins.limiter.forget(room)
        self._spawn(self.reads.forget(room))
        self._spawn(self.joins.cooled(room))

    async def _is_room(self, channel: int) -> bool:
        found = await self.store.get_channel(channel)
        return found is not None and found.kind is ChannelKind.ROOM

    def _health(self, transition: BreakerTransition | None) -> None:
        if transition is None:
            return
        level = logging.WARNING if transition.new is not Health.HEALTHY else logging.INFO
        log.log(level, "%s: %s → %s (errors %.0f%%, slow %.0f%%)", transition.dependency, transition.old.value, transition.new.value,
                transition.error_ratio * 100, transition.slow_ratio * 100)  # fmt: skip
        if transition.dependency == self.store_breaker.dependency:
            self.rooms.critical = transition.new is Health.CRITICAL

    # The SendGuard port (chat.guards)

    def admit_send(self, user: str, channel: int, *, bot: bool) -> Awaitable[None] | None:
        now = self._clock()
        rooms = self.rooms
        rooms.detector.count(channel, SEND, now)
        if bot and (wait_s := self.bot_sends.take(user, now)):
            self.counters.bot_sends_limited += 1
            raise RateLimited("this bot is sending too fast", retry_after_ms=int(wait_s * 1000) + 1)
        hot = rooms.protected(channel)
        if hot and self.limits_on and (refused := self.sends.take(channel, now)) is not None:
            self.counters.sends_throttled += 1
            rooms.refused(channel)
            raise Throttled("this room is very busy; try again shortly", retry_after_ms=refused)
        self._shield(now)
        return self.writes.enter(lane_for(bot=bot, hot=hot))

    def shield_send(self) -> None:
        self._shield(self._clock())

    def _shield(self, now: float) -> None:
        breaker = self.store_breaker
        if breaker.health is Health.CRITICAL and now < breaker.open_until:
            self.counters.sends_shielded += 1  # not even a lane: storage is known to be failing
            raise Unavailable("message storage is failing; try again shortly", retry_after_ms=max(1, int((breaker.open_until - now) * 1000)))

    def batched(self, channel: int) -> bool:
        return self.batching and self.rooms.protected(channel)

    def write(self, message: Message, orphaned: Orphaned) -> Awaitable[tuple[Message, bool]]:
        return self.writes.write(message, orphaned)

    def stored(self, message: Message) -> None:
        self.reads.stored(message)

    async def history(self, channel: int, before: int | None, after: int | None, limit: int, read: ReadPage) -> Page:
        self.rooms.detector.count(channel, FETCH, self._clock())
        if not self.rooms.protected(channel):
            return await read(channel, before, after, limit)
        return await self.reads.read(channel, before, after, limit, read)

    def typing(self, channel: int) -> bool:
        return not self.fanout.ephemeral(channel, events.TYPING)

    def entered(self, channel: int) -> None:
        self.rooms.detector.count(channel, JOIN, self._clock())

    # Operators (the ops API of another issue builds on these)

    def snapshot(self) -> list[RoomView]:
        """Every room the detector watches, hottest first, with its rates and state."""
        return self.rooms.snapshot()

    async def pin(self, room: int, hot: bool | None) -> None:
        """Force ``room`` protected (True) or not (False) on every node that is up; None: unpin."""
        await self.rooms.pin(room, hot)

    def health(self) -> dict[str, str]:
        """Each guarded dependency's health ("healthy", "caution", "critical")."""
        return {g.breaker.dependency: g.breaker.health.value for g in self._guarded}
