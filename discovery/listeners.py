"""Callbacks registered for changes, called in order; one failing never stops the others."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Listeners(Generic[T]):
    def __init__(self, what: str) -> None:
        self._what = what  # names the change in the log line of a failing callback
        self._callbacks: list[Callable[[T], None]] = []

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def add(self, callback: Callable[[T], None]) -> Callable[[], None]:
        """Register ``callback``; returns the function that unregisters it (idempotent)."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def notify(self, value: T) -> None:
        for callback in list(self._callbacks):  # a callback may unsubscribe itself
            try:
                callback(value)
            except Exception:  # one bad listener must not stop the others
                log.exception("%s listener failed", self._what)
