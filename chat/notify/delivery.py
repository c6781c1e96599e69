"""The elected node: due outbox items → the webhook → delete, reschedule or give up.

One deliverer per cluster: it works only while ``is_leader()`` is True (the "notifier"
election through ZooKeeper; an embedded node is its own leader), and checks that before every
claim. It polls the outbox every ``poll_s``, at once when this node enqueued something or
became leader, and again right away while claims come back full.

Each claim (:meth:`Deliverer.run_once`) takes up to ``batch`` due items — leased for
``lease_ms``, longer than one delivery can take — and POSTs them concurrently. Then, per item:

* delivered (2xx): deleted;
* failed, with attempts and age left: rescheduled after :class:`~chat.notify.retry.RetryPolicy`'s
  backoff (capped, jittered, at least what a ``Retry-After`` asked for);
* failed for the last time, or too old to be worth sending: deleted and counted; one log line
  per claim names how many were given up and why.

So delivery is **at least once**: a deliverer that dies after the POST and before the delete
leaves the item leased, and whoever claims it after the lease sends it again with the same
``Idempotency-Key``. A webhook that fails never blocks chat: this task is all it slows down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from chat.notify.outage import Outage
from chat.notify.retry import RetryPolicy
from chat.notify.webhook import Outcome
from chat.store.outbox import OutboxItem

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class OutboxStore(Protocol):
    """What the deliverer needs of the store (its outbox methods)."""

    async def outbox_claim(self, now_ms: int, *, limit: int, lease_ms: int, oldest_ms: int) -> list[OutboxItem]: ...

    async def outbox_reschedule(self, item: OutboxItem, due_ms: int) -> None: ...

    async def outbox_delete(self, item: OutboxItem) -> None: ...


class Sender(Protocol):
    """Sends one item (the webhook); never raises for the network's or the receiver's doing."""

    async def post(self, item: OutboxItem) -> Outcome: ...


class Deliverer:
    """The polling delivery loop (see the module docstring)."""

    def __init__(
        self,
        store: OutboxStore,
        sender: Sender,
        policy: RetryPolicy,
        *,
        is_leader: Callable[[], bool] = lambda: True,
        clock_ms: Callable[[], int] = wall_clock_ms,
        jitter: Callable[[], float] = random.random,
        # Timing
        poll_s: float = 1.0,
        lease_ms: int = 30_000,
        close_timeout_s: float = 5.0,
        # Limits
        batch: int = 16,
    ) -> None:
        self._store = store
        self._sender = sender
        self._policy = policy
        self.is_leader = is_leader  # read before every claim; the composition root sets it
        self._clock_ms = clock_ms
        self._jitter = jitter
        self._poll_s = poll_s
        # How long a claimed item is kept from other claims: longer than one POST plus its
        # delete or reschedule, so only a dead deliverer's items are ever claimed again.
        self._lease_ms = lease_ms
        self._close_timeout_s = close_timeout_s
        self._batch = batch  # items per claim, all POSTed concurrently
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # close() was called: finish the claim in hand, take no other
        self._store_outage = Outage("notifications: outbox", log)
        self.delivered = 0
        self.given_up = 0

    def nudge(self) -> None:
        """Something may be due now (enqueued here, or leadership changed): claim without waiting."""
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="notify-delivery")

    async def close(self) -> None:
        """Stop; deliveries in flight get ``close_timeout_s`` to finish (else they are claimed
        again after their lease)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self._close_timeout_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while not self._closing:
            self._wake.clear()
            full = False
            if self.is_leader():  # O(1), no I/O (the LeaderElection contract)
                try:
                    full = await self.run_once() >= self._batch
                except Exception as exc:  # noqa: BLE001 - the store failed: try again next poll
                    self._store_outage.failed(f"{type(exc).__name__}: {exc}", "claiming again every poll")
            if full or self._closing:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self._wake.wait()

    async def run_once(self) -> int:
        """Claim due items and deliver them; returns how many were claimed. Raises the store's
        error if the claim failed."""
        now = self._clock_ms()
        items = await self._store.outbox_claim(now, limit=self._batch, lease_ms=self._lease_ms, oldest_ms=now - self._policy.max_age_ms)
        self._store_outage.recovered()
        if not items:
            return 0
        reasons = await asyncio.gather(*(self._deliver(item) for item in items))
        dropped = [(item, reason) for item, reason in zip(items, reasons, strict=True) if reason is not None]
        if dropped:
            self.given_up += len(dropped)
            item, reason = dropped[0]
            log.warning("notifications: gave up %d notification(s), e.g. %s (%s)", len(dropped), item.id, reason)
        return len(items)

    async def _deliver(self, item: OutboxItem) -> str | None:
        """Deliver one claimed item; the reason it was given up, or None."""
        if self._policy.expired(self._clock_ms() - item.created_ms):
            reason: str | None = f"older than {self._policy.max_age_ms // 1000} s before attempt {item.attempts}"
        else:
            outcome = await self._sender.post(item)
            if outcome.delivered:
                self.delivered += 1
                await self._finish(item, None)
                return None
            reason = self._policy.give_up(item.attempts, self._clock_ms() - item.created_ms)
            if reason is None:
                delay_s = self._policy.delay_s(item.attempts, self._jitter(), outcome.retry_after_s)
                await self._finish(item, self._clock_ms() + int(delay_s * 1000))
                return None
            reason = f"{reason}, last: {outcome.detail}"
        await self._finish(item, None)
        return reason

    async def _finish(self, item: OutboxItem, due_ms: int | None) -> None:
        """Reschedule (``due_ms``) or delete; a store failure leaves the item to its lease."""
        try:
            if due_ms is None:
                await self._store.outbox_delete(item)
            else:
                await self._store.outbox_reschedule(item, due_ms)
        except Exception as exc:  # noqa: BLE001 - it comes back after its lease: sent again, same key
            self._store_outage.failed(f"{type(exc).__name__}: {exc}", "such notifications are sent again after their lease")
