"""What both config adapters share: the current snapshot, reads, and change notification."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType

from discovery.config.schema import ConfigSnapshot, Schema, Value
from discovery.listeners import Listeners

log = logging.getLogger(__name__)


class ConfigState:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.current = ConfigSnapshot(MappingProxyType(schema.defaults()), -1)
        self._listeners: Listeners[ConfigSnapshot] = Listeners("config")

    def get(self, key: str) -> Value:
        self.schema.setting(key)  # an undeclared key is refused, not answered with None
        return self.current.values[key]

    def subscribe(self, callback: Callable[[ConfigSnapshot], None]) -> Callable[[], None]:
        return self._listeners.add(callback)

    def apply(self, stored: Mapping[str, object], version: int) -> ConfigSnapshot:
        """Adopt a stored document (if not older than what we hold); listeners hear of value changes."""
        if version < self.current.version:
            return self.current  # a late answer about an older version
        values, ignored = self.schema.resolve(stored)
        for problem in ignored:
            log.warning("dynamic setting ignored (default used): %s", problem)
        changed = values != self.current.values
        self.current = ConfigSnapshot(MappingProxyType(values), version)
        if changed:
            self._listeners.notify(self.current)
        return self.current


class StateBackedStore:
    """The ConfigStore answers both adapters give straight from their :class:`ConfigState`."""

    _state: ConfigState

    def snapshot(self) -> ConfigSnapshot:
        return self._state.current

    def get(self, key: str) -> Value:
        return self._state.get(key)

    def subscribe(self, callback: Callable[[ConfigSnapshot], None]) -> Callable[[], None]:
        return self._state.subscribe(callback)
