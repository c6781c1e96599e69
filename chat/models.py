"""Small immutable values passed between layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ChannelKind(StrEnum):
    """What a channel is; decides who may join and how large it may grow."""

    DM = "dm"  # exactly two members, one channel per pair
    GROUP = "group"  # invite-only, bounded (CHAT_GROUP_MAX_MEMBERS)
    ROOM = "room"  # open to anyone, unbounded: the hot-room candidates


@dataclass(frozen=True, slots=True)
class Message:
    """A stored chat message. ``id`` is a Snowflake; ``ts`` is derived from it."""

    id: int
    channel: int
    sender: str
    text: str
    ts: int  # ms since the Unix epoch, taken from the ID
    client_msg_id: str

    def to_wire(self) -> dict[str, Any]:
        """The protocol's message object (IDs as decimal strings)."""
        return {
            "id": str(self.id),
            "channel": str(self.channel),
            "sender": self.sender,
            "text": self.text,
            "ts": self.ts,
            "client_msg_id": self.client_msg_id,
        }


@dataclass(frozen=True, slots=True)
class Channel:
    """A conversation: DM, group or room."""

    id: int
    kind: ChannelKind
    name: str
    created_by: str
    created_ts: int
    # DMs: the sorted pair, so the same two users always map to one channel.
    dm_key: str | None = None

    def to_wire(self, members: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": str(self.id),
            "kind": self.kind.value,
            "name": self.name,
            "created_by": self.created_by,
            "created_ts": self.created_ts,
        }
        if members is not None:
            body["members"] = members
        return body


@dataclass(frozen=True, slots=True)
class Page:
    """One page of history: ``messages`` ascending by ID."""

    messages: list[Message] = field(default_factory=list)
    has_more: bool = False


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    user: str
    roles: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_bot(self) -> bool:
        """A bot: its sends are bulk posting (their own per-user limit and storage lane)."""
        return "bot" in self.roles
