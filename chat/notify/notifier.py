"""Offline notifications on one node, put together for the composition root.

Every node runs the :class:`~chat.notify.enqueue.Enqueuer` (its own messages → the outbox); the
node that wins the cluster's "notifier" election also runs the
:class:`~chat.notify.delivery.Deliverer` (the outbox → the webhook). A node without
``CHAT_PUSH_WEBHOOK_URL`` has no notifier at all (:func:`build_notifier` returns None), so it
enqueues nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from chat.config import Settings
from chat.models import Message
from chat.notify.delivery import Deliverer, OutboxStore
from chat.notify.enqueue import Enqueuer, EnqueueStore, PresenceQuery
from chat.notify.retry import RetryPolicy
from chat.notify.webhook import Webhook
from discovery.leader.base import LeaderElection

log = logging.getLogger(__name__)

ELECTION = "notifier"
# A claimed item's lease, beyond its POST: the delete or reschedule after it, with room to spare.
LEASE_MARGIN_S = 15.0


class NotifyStore(EnqueueStore, OutboxStore, Protocol):
    """The store's part in notifications (the MessageStore has all of it)."""


class Notifier:
    """The node's enqueuer, deliverer and webhook, started and stopped together."""

    def __init__(self, enqueuer: Enqueuer, deliverer: Deliverer, webhook: Webhook) -> None:
        self.enqueuer = enqueuer
        self.deliverer = deliverer
        self.webhook = webhook
        self._unsubscribe: Callable[[], None] | None = None

    def offer(self, message: Message) -> None:
        """A message was just stored (the message path calls this; O(1), never waits)."""
        self.enqueuer.offer(message)

    async def start(self, election: LeaderElection) -> None:
        """Start enqueuing; deliver while ``election`` says this node leads."""
        await self.webhook.open()
        self.deliverer.is_leader = lambda: election.is_leader
        self._unsubscribe = election.subscribe(self._leadership)
        await self.enqueuer.start()
        await self.deliverer.start()
        where = "this node delivers them" if election.is_leader else "the elected node delivers them"
        log.info("notifications: on, for %s; %s", self.webhook, where)

    def _leadership(self, leader: bool) -> None:
        log.info("notifications: %s", "this node delivers them now (elected)" if leader else "this node no longer delivers them")
        self.deliverer.nudge()

    async def close(self) -> None:
        """Put what is queued in the outbox, let deliveries in flight finish (both bounded), stop."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.enqueuer.close()
        await self.deliverer.close()
        await self.webhook.close()


def build_notifier(settings: Settings, *, store: NotifyStore, presence: PresenceQuery) -> Notifier | None:
    """The notifier ``settings`` ask for, or None when no webhook is configured."""
    if not settings.push_enabled:
        return None
    webhook = Webhook(settings.push_webhook_url, settings.push_webhook_secret, timeout_s=settings.push_timeout_s)
    policy = RetryPolicy(max_attempts=settings.push_max_attempts, max_age_ms=int(settings.push_max_age_s * 1000))
    lease_ms = int((settings.push_timeout_s + settings.store_timeout_s + LEASE_MARGIN_S) * 1000)
    deliverer = Deliverer(store, webhook, policy, lease_ms=lease_ms)
    enqueuer = Enqueuer(store, presence, on_enqueued=deliverer.nudge)
    return Notifier(enqueuer, deliverer, webhook)
