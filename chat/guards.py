"""What the core asks of hot-room protection: the ports between the message path, channel rules and
the hub on one side and ``chat.protect`` (which does the I/O) on the other.

The core calls these at fixed points and knows nothing of detectors, lanes or batches:

* :class:`SendGuard` — the message path (``chat.service``): before minting, after storing,
  history reads, typing, subscribes;
* :class:`JoinGuard` — channel rules (``chat.channels``): a user joining a room;
* :class:`FanoutPolicy` — the hub (``chat.hub``): every live message and ephemeral event of a
  channel with local subscribers.

:data:`NO_GUARD` lets everything through (a core built without protection, as unit tests do).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from chat.models import Message, Page

#: Reads a page of history from the store: (channel, before, after, limit) → page.
ReadPage = Callable[[int, int | None, int | None, int], Awaitable[Page]]


class SendGuard(Protocol):
    def shield_send(self) -> None:
        """Before a send touches storage at all (its membership read included): raise
        ``unavailable`` with ``retry_after_ms`` while storage is known to be failing."""

    def admit_send(self, user: str, channel: int, *, bot: bool) -> Awaitable[None] | None:
        """Before minting: count the send and refuse it (raise ``throttled``, ``rate_limited`` or
        ``unavailable`` with ``retry_after_ms``) or admit it — at once (None) or once the returned
        awaitable completes (its storage lane is busy; the wait is bounded and may still raise)."""

    def batched(self, channel: int) -> bool:
        """Whether the channel's next message is written through :meth:`write` (a hot room, batching on)."""

    def write(self, message: Message, orphaned: Callable[[Message], None]) -> Awaitable[tuple[Message, bool]]:
        """Store ``message`` in a batch; resolves like ``MessageStore.insert_message`` once it is
        durable (bounded: ``unavailable`` past the bound). If the caller stops waiting and the
        message is stored anyway, ``orphaned(message)`` is called: it was never published."""

    def stored(self, message: Message) -> None:
        """A message sent through this node is durable (before its ack)."""

    async def history(self, channel: int, before: int | None, after: int | None, limit: int, read: ReadPage) -> Page:
        """A page of history: from ``read`` (the store), or from memory for a hot room."""

    def typing(self, channel: int) -> bool:
        """Whether a typing event of ``channel`` is published at all."""

    def entered(self, channel: int) -> None:
        """A socket subscribed to ``channel`` (counted with joins)."""


class JoinGuard(Protocol):
    async def join(self, user: str, channel: int, ticket: str | None) -> None:
        """``user`` joins room ``channel`` (not yet a member): return to let them in, or raise
        ``throttled`` with ``retry_after_ms`` (queued in the waiting room: ``position`` in the
        error's fields; or refused). ``ticket``: the one an ``admitted`` frame gave them."""


class FanoutPolicy(Protocol):
    def message(self, channel: int, message_id: int, frame: bytes, recipients: int) -> bool:
        """A live message for ``recipients`` local subscribers; True: taken (it will reach them
        in a batch), False: deliver it now. Runs for every message: O(1), no allocation for quiet rooms."""

    def ephemeral(self, channel: int, kind: str) -> bool:
        """True: drop this typing/presence event of ``channel`` (a hot room)."""


class _NoGuard:
    """Lets everything through, at the cost of a method call."""

    def shield_send(self) -> None:
        return None

    def admit_send(self, user: str, channel: int, *, bot: bool) -> Awaitable[None] | None:
        return None

    def batched(self, channel: int) -> bool:
        return False

    def write(self, message: Message, orphaned: Callable[[Message], None]) -> Awaitable[tuple[Message, bool]]:
        raise NotImplementedError("batched() is always False")

    def stored(self, message: Message) -> None:
        return None

    async def history(self, channel: int, before: int | None, after: int | None, limit: int, read: ReadPage) -> Page:
        return await read(channel, before, after, limit)

    def typing(self, channel: int) -> bool:
        return True

    def entered(self, channel: int) -> None:
        return None

    async def join(self, user: str, channel: int, ticket: str | None) -> None:
        return None

    def message(self, channel: int, message_id: int, frame: bytes, recipients: int) -> bool:
        return False

    def ephemeral(self, channel: int, kind: str) -> bool:
        return False


NO_GUARD = _NoGuard()
