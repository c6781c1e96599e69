"""Offline notifications: a message for someone with no online device goes to a push webhook.

One job per module::

    mentions.py   pure: ``@user`` mentions in message text
    payload.py    pure: the notification ID and the webhook body of (message, recipient)
    signing.py    pure: the HMAC-SHA256 signature header, and how a receiver verifies it
    retry.py      pure: capped exponential backoff with jitter, and when to give up
    outage.py     one warning per outage, not one per failure
    enqueue.py    every node: stored messages → recipients → presence → the store's outbox
    webhook.py    one signed POST (httpx), its outcome
    delivery.py   the elected node: due outbox items → webhook → delete or reschedule
    notifier.py   the three put together for the composition root

Nothing here runs unless ``CHAT_PUSH_WEBHOOK_URL`` is set. The message path only hands each
new message to :meth:`~chat.notify.notifier.Notifier.offer` (O(1), never waits); the outbox
(``chat.store.outbox``) makes notifications survive restarts, delivered at least once.
"""
