"""The MessageStore port: what the message path needs from durable storage.

Contract every adapter keeps (``tests/contract/test_message_store.py`` checks it):

* Every coroutine returns only once its write is **durable** on the backend
  (fsynced SQLite commit, Cassandra write at the configured consistency). The
  message path acks a message after ``insert_message`` returns, never before.
* ``insert_message`` is idempotent on ``(channel, sender, client_msg_id)``:
  concurrent or repeated calls with one key store one message, and every call
  returns that message with ``created`` true for exactly one of them.
  ``insert_messages`` (a batch of one channel's messages, as hot rooms write them) keeps the
  same promise for every message in it, against single inserts, other batches and itself (two
  messages of one batch with one key: the first is stored, the second gets it back).
* History pages are ascending by ID and follow PROTOCOL.md's paging rules
  (see :meth:`MessageStore.history`).
* ``add_member`` enforces ``max_members`` atomically enough that concurrent adds
  on one node cannot exceed it.
* A backend failure or timeout raises :class:`chat.errors.Unavailable`; driver
  exceptions never escape the adapter. A write that raised may or may not have
  been stored; retrying it with the same IDs is safe (idempotent).
* The notification outbox (``outbox_*``) keeps the contract of :mod:`chat.store.outbox`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

from chat.models import Channel, Message, Page
from chat.store.outbox import NotificationOutbox


class AddResult(StrEnum):
    ADDED = "added"
    ALREADY = "already"  # was a member: nothing changed
    FULL = "full"  # would exceed max_members: nothing changed
    NO_CHANNEL = "no_channel"


class MessageStore(NotificationOutbox, Protocol):
    """Durable storage for the message path. All methods are coroutines safe to call on the loop."""

    async def open(self) -> None:
        """Connect and make the schema usable. Called once before any other method."""

    async def close(self) -> None:
        """Flush pending writes and release connections."""

    async def ping(self) -> None:
        """Raise :class:`~chat.errors.Unavailable` unless the backend answers a real query."""

    # Channels and members

    async def create_channel(self, channel: Channel, members: list[str]) -> None:
        """Store a new group or room with its initial members (the creator included)."""

    async def get_or_create_dm(self, channel: Channel, members: tuple[str, str]) -> tuple[Channel, bool]:
        """The DM of ``channel.dm_key``: the existing one, or ``channel`` newly stored with ``members``.

        Returns ``(channel, created)``; concurrent calls for one pair agree on one channel.
        """

    async def get_dm(self, dm_key: str) -> Channel | None:
        """The DM of the pair ``dm_key`` if it exists, else None; never creates one."""

    async def get_channel(self, channel_id: int) -> Channel | None:
        ...

    async def add_member(self, channel_id: int, user: str, *, max_members: int | None = None) -> AddResult:
        ...

    async def remove_member(self, channel_id: int, user: str) -> bool:
        """Remove ``user``; False if they were not a member."""

    async def is_member(self, channel_id: int, user: str) -> bool:
        ...

    async def list_members(self, channel_id: int, *, limit: int = 1000) -> list[str]:
        """Members in a stable order (by user ID), at most ``limit``."""

    async def count_members(self, channel_id: int) -> int:
        ...

    async def list_user_channels(self, user: str, *, before: int | None = None, limit: int = 1000) -> list[Channel]:
        """The channels ``user`` belongs to, newest (largest ID) first, at most ``limit``; with
        ``before``, only those with a smaller ID (the next page starts below the last ID seen)."""

    # Messages

    async def insert_message(self, message: Message) -> tuple[Message, bool]:
        """Store ``message`` unless its idempotency key is taken.

        Returns ``(stored, created)``: the message now stored under the key, and whether
        this call stored it (False: a retry; ``stored`` is the original, text and ID included).
        """

    async def insert_messages(self, messages: Sequence[Message]) -> list[tuple[Message, bool]]:
        """Store a batch of messages of **one channel** (ValueError otherwise), each as
        :meth:`insert_message` would; ``(stored, created)`` per message, in the batch's order.

        Returns once every message is durable. Raises :class:`~chat.errors.Unavailable` if any
        could not be stored: then some may be stored, and retrying the batch (or any of its
        messages) with the same IDs stores each at most once.
        """

    async def history(
        self,
        channel_id: int,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> Page:
        """One page, ascending by ID.

        No cursor: the newest ``limit``. ``before``: the ``limit`` just before it. ``after``:
        the ``limit`` just after it. Both: strictly between, starting just after ``after``.
        ``has_more``: more exist past the page in the direction of travel (older without a
        cursor or with ``before`` only; newer with ``after``) — within the bounds given.
        """

    # Read positions

    async def set_read(self, user: str, channel_id: int, message_id: int) -> int:
        """Advance ``user``'s read position in a channel (never moves back); returns the position now stored."""

    async def get_read(self, user: str, channel_id: int) -> int | None:
        ...


def one_channel(messages: Sequence[Message]) -> None:
    """Raise ValueError unless every message of a batch is of one channel (the port's rule)."""
    if messages and any(m.channel != messages[0].channel for m in messages):
        raise ValueError("a batch of messages must be of one channel")
