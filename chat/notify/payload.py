"""The notification of one message for one recipient (pure): its ID and its webhook body.

The ID is ``"<message id>:<recipient>"``: deterministic, so processing a message twice (a retry,
a double enqueue) yields the same notification, which the outbox and the receiver count once.
The body is encoded here, once; the deliverer sends and signs these exact bytes on every
attempt. Fields (docs/protocol.md, "Notifications")::

    {"id": "<notification id>", "reason": "dm" | "mention", "recipient": "bob", "sender": "alice",
     "channel": {"id": "…", "kind": "dm" | "group" | "room", "name": "…"},
     "message": {"id": "…", "ts": 1732280000123, "preview": "…", "truncated": false}}
"""

from __future__ import annotations

from typing import Literal

import orjson

from chat.models import Channel, Message
from chat.store.outbox import Notification

Reason = Literal["dm", "mention"]
PREVIEW_CHARS = 200  # code points of the message text a push carries; the client fetches the rest


def notification_id(message_id: int, recipient: str) -> str:
    """The notification's ID (and the webhook's idempotency key)."""
    return f"{message_id}:{recipient}"


def preview(text: str, limit: int = PREVIEW_CHARS) -> tuple[str, bool]:
    """The first ``limit`` code points of ``text``, and whether it was cut."""
    return (text, False) if len(text) <= limit else (text[:limit], True)


def render(message: Message, channel: Channel, recipient: str, reason: Reason) -> Notification:
    """The notification telling ``recipient`` about ``message`` in ``channel``."""
    text, truncated = preview(message.text)
    nid = notification_id(message.id, recipient)
    body = {
        "id": nid,
        "reason": reason,
        "recipient": recipient,
        "sender": message.sender,
        "channel": {"id": str(channel.id), "kind": channel.kind.value, "name": channel.name},
        "message": {"id": str(message.id), "ts": message.ts, "preview": text, "truncated": truncated},
    }
    return Notification(nid, recipient, orjson.dumps(body), message.ts)
