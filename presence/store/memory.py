"""In-memory PresenceStore: the embedded single node's view of its own connections."""

from __future__ import annotations

from presence.store.base import UserPresence


class MemoryPresenceStore:
    def __init__(self) -> None:
        # user → {device: last heartbeat ms}; a user with no devices is absent (offline).
        self._devices: dict[str, dict[str, int]] = {}
        # user → last time seen, kept after they go offline so `last_seen` stays meaningful.
        # Bounded by the number of distinct users that ever connected to this process.
        self._last_seen: dict[str, int] = {}

    async def connect(self, user: str, device: str, now_ms: int) -> bool:
        devices = self._devices.setdefault(user, {})
        went_online = not devices
        devices[device] = now_ms
        self._last_seen[user] = now_ms
        return went_online

    async def heartbeat(self, user: str, device: str, now_ms: int) -> None:
        devices = self._devices.get(user)
        if devices is not None and device in devices:
            devices[device] = now_ms
        self._last_seen[user] = now_ms

    async def disconnect(self, user: str, device: str, now_ms: int) -> bool:
        devices = self._devices.get(user)
        if not devices or device not in devices:
            return False
        del devices[device]
        self._last_seen[user] = now_ms
        if devices:
            return False
        del self._devices[user]
        return True

    async def query(self, users: list[str]) -> dict[str, UserPresence]:
        return {
            u: UserPresence("online" if self._devices.get(u) else "offline", self._last_seen.get(u))
            for u in users
        }
