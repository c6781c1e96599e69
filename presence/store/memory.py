"""In-memory PresenceStore: the embedded single node, :class:`presence.state.PresenceState` as is.

Nothing is shared between processes, so this is the whole cluster only when the node runs
alone. Memory is bounded by live devices plus users seen within the retention period.
"""

from __future__ import annotations

from collections.abc import Sequence

from presence.state import (
    RETENTION_MS,
    DeviceEvent,
    Expiry,
    OnlineSample,
    PresenceState,
    Transition,
    UserPresence,
)


class MemoryPresenceStore:
    """PresenceStore over in-process state (see presence/store/base.py for the contract)."""

    def __init__(self, *, timeout_ms: int = 30_000, retention_ms: int = RETENTION_MS) -> None:
        self._state = PresenceState(timeout_ms, retention_ms=retention_ms)

    def __repr__(self) -> str:
        return f"MemoryPresenceStore(timeout_ms={self.timeout_ms})"

    @property
    def timeout_ms(self) -> int:
        return self._state.timeout_ms

    async def apply(self, events: Sequence[DeviceEvent]) -> list[Transition]:
        return self._state.apply(events)

    async def expire(self, now_ms: int, limit: int) -> Expiry:
        return self._state.expire(now_ms, limit)

    async def query(self, users: Sequence[str]) -> dict[str, UserPresence]:
        state = self._state
        return {u: state.presence(u) for u in users}

    async def online_among(self, users: Sequence[str], limit: int) -> OnlineSample:
        return self._state.online_among(users, limit)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
