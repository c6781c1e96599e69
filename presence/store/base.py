"""The PresenceStore port: per-device liveness, shared by every node of a cluster.

A user is online while any of their devices is connected (this node's own view for
the embedded store; the Redis store of a later issue aggregates every node and adds
heartbeat timeouts). ``last_seen`` is the last heartbeat, connect or disconnect, in
Unix-epoch milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class UserPresence:
    status: str  # "online" | "offline"
    last_seen: int | None  # ms since the Unix epoch; None if never seen

    def to_wire(self) -> dict[str, object]:
        return {"status": self.status, "last_seen": self.last_seen}


class PresenceStore(Protocol):
    async def connect(self, user: str, device: str, now_ms: int) -> bool:
        """Record a device; True if this made the user go online."""

    async def heartbeat(self, user: str, device: str, now_ms: int) -> None:
        ...

    async def disconnect(self, user: str, device: str, now_ms: int) -> bool:
        """Forget a device; True if this made the user go offline."""

    async def query(self, users: list[str]) -> dict[str, UserPresence]:
        ...
