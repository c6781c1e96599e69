"""The ConfigStore port: dynamic settings, changed at run time, seen by every node.

Contract (both adapters):
- The application declares its settings in a :class:`~discovery.config.schema.Schema`;
  a store knows nothing else. Unset settings read as their defaults.
- :meth:`ConfigStore.snapshot` and :meth:`ConfigStore.get` answer locally, with no I/O.
- :meth:`ConfigStore.set` validates every change first: an unknown key or a bad value
  raises :class:`~discovery.errors.ConfigRejected` naming each problem, and nothing is
  applied. ``None`` sets a key back to its default. The schema's combination check (if any)
  runs on the document the change would leave stored (whatever other nodes wrote before),
  and refuses it the same way. Concurrent sets (from this node or
  any other) never lose one: the ZooKeeper adapter writes with compare-and-set on the
  znode version and retries. Returns the snapshot that includes the change.
- A change reaches every node's snapshot and subscribers within a second (ZooKeeper: a
  data watch; in-process: at once).
- A stored value the schema no longer accepts (a key of a newer version, a bound
  tightened since) is ignored with a warning; the setting keeps its default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from discovery.config.schema import ConfigSnapshot, Schema, Value


class ConfigStore(Protocol):
    schema: Schema

    async def start(self) -> None:
        """Load the stored settings (and start watching them); bounded."""

    async def close(self) -> None:
        """Stop watching (idempotent)."""

    def snapshot(self) -> ConfigSnapshot:
        """Every setting's current value."""

    def get(self, key: str) -> Value:
        """One setting's current value; ConfigRejected for an undeclared key."""

    async def set(self, changes: Mapping[str, object]) -> ConfigSnapshot:
        """Validate and apply ``changes`` atomically; returns the new snapshot."""

    def subscribe(self, callback: Callable[[ConfigSnapshot], None]) -> Callable[[], None]:
        """Call ``callback`` on the loop after each change; returns an unsubscribe function."""
