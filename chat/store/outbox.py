"""The notification outbox port: durable offline notifications waiting for the webhook.

Part of the MessageStore (``chat.store.base.MessageStore`` extends :class:`NotificationOutbox`),
so every store adapter keeps it and ``tests/contract/test_outbox.py`` checks both.

Contract:

* :meth:`~NotificationOutbox.outbox_put` is **idempotent on the notification ID** while the
  item is in the outbox: putting an ID again changes nothing (not its due time, not its
  attempts), whether it was claimed or rescheduled meanwhile. A new item is due at its
  ``created_ms``. Once an item is deleted, putting its ID again may enqueue it again: callers
  put an ID once (a put that raised may be repeated) and receivers de-duplicate on the ID.
* :meth:`~NotificationOutbox.outbox_claim` returns at most ``limit`` items whose due time is
  in ``[oldest_ms, now_ms]``, ordered by due time then ID, and before returning moves each
  to ``due = now_ms + lease_ms`` with ``attempts + 1`` (the returned items show the new
  values). A claimed item is not returned again before its lease runs out; one whose
  deliverer died is returned again after it (at-least-once). Items due before ``oldest_ms``
  are never returned again (adapters may drop them). In SQLite a claim is atomic; in
  Cassandra it is read-then-move without a lock, so only one deliverer per cluster may
  claim (the caller holds a leader election): two racing claimers could both get an item.
* :meth:`~NotificationOutbox.outbox_reschedule` moves a claimed item to ``due_ms`` (attempts
  unchanged); :meth:`~NotificationOutbox.outbox_delete` removes it (delivered, or given up).
  Both act on the item as claimed and must come within its lease: after the lease ran out
  the item may have been claimed again, and a late call then never loses it but may leave
  it to be delivered twice.
* Every method returns once its write is durable; a backend failure raises
  :class:`chat.errors.Unavailable` (a write that raised may or may not have happened; all of
  them are safe to repeat).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Notification:
    """What is put: one notification for one recipient, its webhook body encoded once."""

    id: str  # deterministic per (message, recipient): the idempotency key
    recipient: str
    body: bytes  # sent and signed as is
    created_ms: int  # ms since the Unix epoch (the message's time); also its first due time


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A claimed notification, as the outbox holds it now."""

    id: str
    recipient: str
    body: bytes
    created_ms: int
    due_ms: int
    attempts: int  # claims so far, this one included


class NotificationOutbox(Protocol):
    """The outbox methods of a MessageStore (see the module docstring for the contract)."""

    async def outbox_put(self, notifications: Sequence[Notification]) -> None:
        """Add notifications not yet in the outbox, due at their ``created_ms``."""

    async def outbox_claim(self, now_ms: int, *, limit: int, lease_ms: int, oldest_ms: int) -> list[OutboxItem]:
        """Up to ``limit`` items due in ``[oldest_ms, now_ms]``, each leased until ``now_ms + lease_ms``."""

    async def outbox_reschedule(self, item: OutboxItem, due_ms: int) -> None:
        """Make a claimed item due again at ``due_ms``."""

    async def outbox_delete(self, item: OutboxItem) -> None:
        """Remove a claimed item (delivered or given up)."""
