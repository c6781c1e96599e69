"""Declared dynamic settings: type, bounds, default, doc (pure).

The caller declares its keys once (chat declares e.g. ``hot_send_per_s``); every value
that enters a store is checked here, whether it comes from ``PUT /v1/ops/config``, the
``chat config set`` command line or another node through ZooKeeper. A refused change
names every problem and applies nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from discovery.errors import ConfigRejected

Value = int | float | bool | str
#: Checks settings that depend on each other (a caution line above a critical one …): given every
#: value a change would leave in force, one line per problem (empty: consistent).
Check = Callable[[Mapping[str, Value]], list[str]]
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True, slots=True)
class Setting:
    """One dynamic setting. ``minimum``/``maximum`` bound numbers; ``choices`` bound strings."""

    key: str
    kind: type[int | float | bool | str]
    default: Value
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None

    def check(self, value: object) -> Value:
        """``value`` as this setting's type, or ValueError saying why not (JSON-typed input)."""
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError("must be true or false")
            return value
        if self.kind is str:
            if not isinstance(value, str):
                raise ValueError("must be a string")
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"must be one of {', '.join(self.choices)}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be {'an integer' if self.kind is int else 'a number'}")
        if self.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("must be an integer")
            number: int | float = int(value)
        else:
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
            number = float(value)
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"must be at most {self.maximum:g}")
        return number

    def parse(self, text: str) -> Value:
        """A command-line string → a checked value (``chat config set KEY VALUE``)."""
        text = text.strip()
        if self.kind is bool:
            lowered = text.lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError("must be true or false")
            return lowered in _TRUE
        if self.kind is str:
            return self.check(text)
        try:
            number: int | float = int(text) if self.kind is int else float(text)
        except ValueError:
            raise ValueError(f"must be {'an integer' if self.kind is int else 'a number'}") from None
        return self.check(number)


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """Every declared setting's current value (defaults filled in), immutable."""

    values: Mapping[str, Value]
    version: int = 0  # changes with every applied change (ZooKeeper: the znode's version)

    def __getitem__(self, key: str) -> Value:
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)


class Schema:
    """The declared settings of one application, and optionally a ``check`` of their combination
    (each key alone is checked by its :class:`Setting`)."""

    __slots__ = ("_check", "by_key", "settings")

    def __init__(self, settings: Iterable[Setting], check: Check | None = None) -> None:
        self.settings = tuple(settings)
        self._check = check
        by_key = {s.key: s for s in self.settings}
        if len(by_key) != len(self.settings):
            raise ValueError("a dynamic setting is declared twice")
        for s in self.settings:
            s.check(s.default)  # a bad default is a programming error: fail at once
        self.by_key: Mapping[str, Setting] = MappingProxyType(by_key)
        if check is not None and (problems := check(self.defaults())):
            raise ValueError(f"the defaults are inconsistent: {problems}")  # a programming error

    def defaults(self) -> dict[str, Value]:
        return {s.key: s.default for s in self.settings}

    def setting(self, key: str) -> Setting:
        """The declaration of ``key``; ConfigRejected for an unknown key."""
        try:
            return self.by_key[key]
        except KeyError:
            raise ConfigRejected([f"{key}: unknown setting (known: {', '.join(sorted(self.by_key))})"]) from None

    def validate(self, changes: Mapping[str, object]) -> dict[str, Value | None]:
        """Check every change (None = back to the default); ConfigRejected lists every problem."""
        problems: list[str] = []
        checked: dict[str, Value | None] = {}
        for key, value in changes.items():
            setting = self.by_key.get(key)
            if setting is None:
                problems.append(f"{key}: unknown setting")
            elif value is None:
                checked[key] = None
            else:
                try:
                    checked[key] = setting.check(value)
                except ValueError as exc:
                    problems.append(f"{key}={value!r}: {exc}")
        if problems:
            raise ConfigRejected(problems)
        return checked

    def check_document(self, stored: Mapping[str, object]) -> None:
        """Refuse a document whose values, each valid alone, do not go together: ConfigRejected
        naming each problem. Stores call it on the merged document before writing it."""
        if self._check is None:
            return
        problems = self._check(self.resolve(stored)[0])
        if problems:
            raise ConfigRejected(problems)

    def parse(self, key: str, text: str) -> Value:
        """``chat config set KEY VALUE``: the string as ``key``'s type; ConfigRejected if bad."""
        setting = self.setting(key)
        try:
            return setting.parse(text)
        except ValueError as exc:
            raise ConfigRejected([f"{key}={text!r}: {exc}"]) from None

    def resolve(self, stored: Mapping[str, object]) -> tuple[dict[str, Value], list[str]]:
        """Defaults overlaid with the stored values that pass; and why others were ignored
        (keys of a newer version, values out of today's bounds): they keep their default."""
        values = self.defaults()
        ignored: list[str] = []
        for key, raw in stored.items():
            setting = self.by_key.get(key)
            if setting is None:
                continue  # another version's setting: kept in the store, unused here
            try:
                values[key] = setting.check(raw)
            except ValueError as exc:
                ignored.append(f"{key}={raw!r}: {exc}")
        return values, ignored


def merge(stored: Mapping[str, object], changes: Mapping[str, Value | None]) -> dict[str, object]:
    """The stored document after ``changes`` (None removes the key: back to the default)."""
    merged = dict(stored)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
