"""The store and the relay behind a circuit breaker each (:mod:`chat.hot.breaker` decides).

:class:`GuardedStore` is a MessageStore: every call asks the breaker first — while CRITICAL it
fails at once with ``unavailable`` and its ``retry_after_ms``, making no request, so a sick
Cassandra is not buried under a backlog — and reports its outcome: success, or ``Unavailable``
(the adapters turn every driver error and timeout into that) as a failure, with its latency.
A caller that went away (cancelled) reports nothing; errors that are not the store's fault
(a ValueError) report nothing either.

**Requests in flight.** A frozen Cassandra answers nothing until the driver's timeouts fire, so
outcomes alone would tell the breaker late (and its window is still full of earlier successes).
:meth:`GuardedStore.age` (the periodic tick calls it) reports every call in flight for ``slow_s``
or longer as slow, right then (its outcome is not reported again when it finally ends), and
reports a *stall* — ``stall_requests`` such calls and no answer at all for ``slow_s`` — which
turns the breaker CRITICAL at once: a frozen store is shielded about ``slow_s`` (+ one tick)
after it froze, as soon as a few requests are waiting on it.

:class:`GuardedRelay` does the same for publishes (``hand_off``/``publish``) that the relay took:
a publish it refuses at once is not counted (the relay knows Redis is away, fails fast by itself
and reconnects, taking publishes again the moment it is back); one taken and then failed, timed
out or slow is — a Redis that stops answering is what the breaker is for. Subscriptions pass
through. While the relay's breaker is CRITICAL a message is still stored and acked, and its
channel's gap is announced once Redis takes publishes again.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from chat.errors import Unavailable
from chat.hot.breaker import Breaker, Transition
from chat.models import Channel, Message, Page
from chat.relay.base import DeliverFn, GapFn, Relay
from chat.store.base import AddResult, MessageStore
from chat.store.outbox import Notification, OutboxItem

T = TypeVar("T")
OnTransition = Callable[[Transition], None]


class _Guarded:
    """A breaker, its clock, and the calls in flight (token → start)."""

    def __init__(self, breaker: Breaker, clock: Callable[[], float], on_transition: OnTransition) -> None:
        self.breaker = breaker  # counts its own refusals (Breaker.refused)
        self._clock = clock
        self._on_transition = on_transition
        self._inflight: dict[int, float] = {}  # insertion order is start order
        self._aged: set[int] = set()  # in flight, and reported as slow already
        self._answered_at = clock()  # the dependency's last answer (any outcome)
        self._tokens = itertools.count()

    def _admit(self) -> int:
        now = self._clock()
        wait_ms = self.breaker.allow(now)
        if wait_ms is not None:
            raise Unavailable(f"the {self.breaker.dependency} dependency is failing; shielded for now", retry_after_ms=wait_ms)
        token = next(self._tokens)
        self._inflight[token] = now
        return token

    def _done(self, token: int, ok: bool) -> None:
        now = self._answered_at = self._clock()
        start = self._inflight.pop(token, None)
        if start is None or token in self._aged:
            self._aged.discard(token)
            return  # reported as slow by age() already
        self._report(self.breaker.record(now, ok, now - start))

    def _gone(self, token: int) -> None:
        """The caller went away (cancelled), or it failed for a reason that is not the dependency's."""
        self._inflight.pop(token, None)
        self._aged.discard(token)

    def _report(self, transition: Transition | None) -> None:
        if transition is not None:
            self._on_transition(transition)

    def age(self, now: float) -> None:
        """Report calls in flight for ``slow_s`` or more as slow, and a stall (see the module docstring)."""
        slow_s = self.breaker.config.slow_s
        for token, start in self._inflight.items():  # oldest first
            if now - start < slow_s:
                break
            if token not in self._aged:
                self._aged.add(token)
                self._report(self.breaker.record(now, True, now - start))
        self._report(self.breaker.stall(now, len(self._aged), now - self._answered_at))

    async def _call(self, call: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        token = self._admit()
        try:
            result = await call(*args, **kwargs)
        except Unavailable:
            self._done(token, False)
            raise
        except BaseException:
            self._gone(token)  # cancelled, or not the dependency's fault
            raise
        self._done(token, True)
        return result


class GuardedStore(_Guarded):
    """A MessageStore behind a breaker (see the module docstring)."""

    def __init__(self, inner: MessageStore, breaker: Breaker, *, clock: Callable[[], float], on_transition: OnTransition) -> None:
        super().__init__(breaker, clock, on_transition)
        self.inner = inner

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self._call(self.inner.ping)

    async def create_channel(self, channel: Channel, members: list[str]) -> None:
        await self._call(self.inner.create_channel, channel, members)

    async def get_or_create_dm(self, channel: Channel, members: tuple[str, str]) -> tuple[Channel, bool]:
        return await self._call(self.inner.get_or_create_dm, channel, members)

    async def get_dm(self, dm_key: str) -> Channel | None:
        return await self._call(self.inner.get_dm, dm_key)

    async def get_channel(self, channel_id: int) -> Channel | None:
        return await self._call(self.inner.get_channel, channel_id)

    async def add_member(self, channel_id: int, user: str, *, max_members: int | None = None) -> AddResult:
        return await self._call(self.inner.add_member, channel_id, user, max_members=max_members)

    async def remove_member(self, channel_id: int, user: str) -> bool:
        return await self._call(self.inner.remove_member, channel_id, user)

    async def is_member(self, channel_id: int, user: str) -> bool:
        return await self._call(self.inner.is_member, channel_id, user)

    async def list_members(self, channel_id: int, *, limit: int = 1000) -> list[str]:
        return await self._call(self.inner.list_members, channel_id, limit=limit)

    async def count_members(self, channel_id: int) -> int:
        return await self._call(self.inner.count_members, channel_id)

    async def list_user_channels(self, user: str, *, before: int | None = None, limit: int = 1000) -> list[Channel]:
        return await self._call(self.inner.list_user_channels, user, before=before, limit=limit)

    async def insert_message(self, message: Message) -> tuple[Message, bool]:
        return await self._call(self.inner.insert_message, message)

    async def insert_messages(self, messages: Sequence[Message]) -> list[tuple[Message, bool]]:
        return await self._call(self.inner.insert_messages, messages)

    async def history(self, channel_id: int, *, before: int | None = None, after: int | None = None, limit: int = 50) -> Page:
        return await self._call(self.inner.history, channel_id, before=before, after=after, limit=limit)

    async def set_read(self, user: str, channel_id: int, message_id: int) -> int:
        return await self._call(self.inner.set_read, user, channel_id, message_id)

    async def get_read(self, user: str, channel_id: int) -> int | None:
        return await self._call(self.inner.get_read, user, channel_id)

    async def outbox_put(self, notifications: Sequence[Notification]) -> None:
        await self._call(self.inner.outbox_put, notifications)

    async def outbox_claim(self, now_ms: int, *, limit: int, lease_ms: int, oldest_ms: int) -> list[OutboxItem]:
        return await self._call(self.inner.outbox_claim, now_ms, limit=limit, lease_ms=lease_ms, oldest_ms=oldest_ms)

    async def outbox_reschedule(self, item: OutboxItem, due_ms: int) -> None:
        await self._call(self.inner.outbox_reschedule, item, due_ms)

    async def outbox_delete(self, item: OutboxItem) -> None:
        await self._call(self.inner.outbox_delete, item)


class GuardedRelay(_Guarded):
    """A Relay whose publishes go through a breaker (see the module docstring)."""

    def __init__(self, inner: Relay, breaker: Breaker, *, clock: Callable[[], float], on_transition: OnTransition) -> None:
        super().__init__(breaker, clock, on_transition)
        self.inner = inner
        self.single_node = inner.single_node

    async def start(self, deliver: DeliverFn, on_gap: GapFn) -> None:
        await self.inner.start(deliver, on_gap)

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self.inner.ping()

    async def subscribe(self, topic: str) -> None:
        await self.inner.subscribe(topic)

    async def unsubscribe(self, topic: str) -> None:
        await self.inner.unsubscribe(topic)

    def hand_off(self, topic: str, payload: bytes) -> Awaitable[None]:
        token = self._admit()
        try:
            confirmation = self.inner.hand_off(topic, payload)  # taken now, in call order
        except Unavailable:
            self._gone(token)  # refused at once: the relay knows Redis is away and reconnects by itself
            raise
        return self._confirmed(token, confirmation)

    async def _confirmed(self, token: int, confirmation: Awaitable[None]) -> None:
        try:
            await confirmation
        except Unavailable:
            self._done(token, False)
            raise
        except BaseException:
            self._gone(token)
            raise
        self._done(token, True)

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.hand_off(topic, payload)
