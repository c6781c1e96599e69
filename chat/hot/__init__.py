"""Hot-room protection, pure building blocks (issue 9): each module takes ``now`` and decides;
none awaits, does I/O or imports a driver. The message path, the hub and the ops API call them.

* :mod:`chat.hot.detector` — which rooms are hot (local rates, cluster aggregation, hysteresis, pins)
* :mod:`chat.hot.breaker` — per-dependency health (HEALTHY / CAUTION / CRITICAL) and failing fast
* :mod:`chat.hot.waiting_room` — joins over a room's join budget queue and are admitted in order
* :mod:`chat.hot.limits` — per-room send/join limits, and lanes (bot / hot / interactive) under a budget
* :mod:`chat.hot.batcher` — per-partition storage write batches under a statements/s budget
* :mod:`chat.hot.coalescer` — a hot room's live messages gathered into ``messages`` batch frames

Clock convention, everywhere: ``now`` is seconds as a float from one monotonic clock
(``time.monotonic()`` in production, plain numbers in tests); waits handed to clients are
``retry_after_ms`` as an int (at least 1).

Settings are frozen dataclasses with defaults, replaced whole at run time (dynamic
configuration); :func:`from_settings` builds one from the flat dynamic settings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

C = TypeVar("C", bound="DataclassInstance")


def retry_ms(wait_s: float) -> int:
    """A wait in seconds as the protocol's ``retry_after_ms``: rounded up, at least 1 ms
    (0 would tell a client to retry at once, which is never what a refusal means)."""
    return max(1, math.ceil(wait_s * 1000))


def from_settings(cls: type[C], values: Mapping[str, object], prefix: str = "") -> C:
    """A settings value of type ``cls`` from flat dynamic settings: field ``f`` is read from key
    ``prefix + f`` (a field without a key keeps its default). Raises ValueError for a combination
    that is inconsistent (caution above critical, …): a schema checks each key alone, so build the
    value while validating a change, and refuse the change if this raises."""
    kwargs: dict[str, Any] = {f.name: values[prefix + f.name] for f in fields(cls) if prefix + f.name in values}
    return cls(**kwargs)
