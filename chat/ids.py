"""Snowflake IDs: 41 bits of milliseconds since 2024-01-01T00:00:00Z, 10 bits of
worker ID, 12 bits of sequence.

IDs are unique per (worker, process lifetime) and strictly increasing per
generator. The generator never sleeps: when the clock is behind its last
timestamp (clock stepped back, or 4096 IDs used up in one millisecond) it raises
:class:`ClockBehind` with how long to wait, and the caller decides how to wait
(``await`` in the server, ``time.sleep`` in tools) and for how long before
giving up loudly. This keeps the hot path free of sleeps and the policy testable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from chat.errors import ClockMovedBackwards

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
TIMESTAMP_BITS = 41
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER_ID = (1 << WORKER_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
WORKER_SHIFT = SEQUENCE_BITS
TIMESTAMP_SHIFT = SEQUENCE_BITS + WORKER_BITS
MAX_ID = (1 << (TIMESTAMP_BITS + TIMESTAMP_SHIFT)) - 1

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


class ClockBehind(Exception):
    """The generator cannot mint until its clock reaches its last timestamp."""

    def __init__(self, wait_ms: int) -> None:
        super().__init__(f"clock is {wait_ms} ms behind the last issued ID")
        self.wait_ms = wait_ms


class SnowflakeGenerator:
    """Mints strictly increasing 64-bit IDs for one worker.

    Not thread-safe: one generator per event loop (the server mints on the loop).
    """

    __slots__ = ("worker_id", "_clock", "_last_ms", "_sequence", "_worker_bits", "_minted")

    def __init__(self, worker_id: int, *, clock: Callable[[], int] = wall_clock_ms, floor_ms: int | None = None) -> None:
        if not 0 <= worker_id <= MAX_WORKER_ID:
            raise ValueError(f"worker_id must be in 0..{MAX_WORKER_ID}, got {worker_id}")
        self.worker_id = worker_id
        # Injected so tests can move time backwards without touching the real clock.
        self._clock = clock
        # Milliseconds since EPOCH_MS of the last issued ID, or of the floor (-1: none). With a
        # floor the sequence starts exhausted, so the first ID falls in a later millisecond:
        # nothing minted here can collide with or sort below what was minted up to the floor.
        self._last_ms = -1 if floor_ms is None else max(-1, floor_ms - EPOCH_MS)
        self._sequence = 0 if floor_ms is None else MAX_SEQUENCE
        # Precomputed: the worker's bits never change.
        self._worker_bits = worker_id << WORKER_SHIFT
        self._minted = False

    @property
    def last_id(self) -> int:
        """The last ID issued (0 before the first): every later ID is larger."""
        if not self._minted:
            return 0
        return (self._last_ms << TIMESTAMP_SHIFT) | self._worker_bits | self._sequence

    @property
    def bound(self) -> int:
        """An ID at or above every ID this generator issued, and below every ID it will issue.

        Before the first ID it is the largest ID of the floor's millisecond (any worker), so it
        also covers whatever a previous process minted up to the floor.
        """
        if self._minted:
            return self.last_id
        if self._last_ms < 0:
            return 0
        return (self._last_ms << TIMESTAMP_SHIFT) | ((1 << TIMESTAMP_SHIFT) - 1)

    @property
    def last_ms(self) -> int | None:
        """Unix milliseconds of the last ID issued (None before the first)."""
        return self._last_ms + EPOCH_MS if self._minted else None

    def next_id(self) -> int:
        """Mint the next ID, or raise :class:`ClockBehind` if the clock must catch up first."""
        return self.next_id_at(self._clock())

    def next_id_at(self, unix_ms: int) -> int:
        """Mint the next ID as if the clock read ``unix_ms`` (a millisecond the caller was
        allowed to mint at); :class:`ClockBehind` if it is behind the last ID's."""
        now = unix_ms - EPOCH_MS
        last = self._last_ms
        if now > last:
            self._last_ms = now
            self._sequence = 0
            self._minted = True
            return (now << TIMESTAMP_SHIFT) | self._worker_bits
        if now == last:
            seq = self._sequence + 1
            if seq > MAX_SEQUENCE:
                raise ClockBehind(1)
            self._sequence = seq
            self._minted = True
            return (now << TIMESTAMP_SHIFT) | self._worker_bits | seq
        raise ClockBehind(last - now)

    def next_id_blocking(self, max_wait_ms: int = 1000) -> int:
        """Mint an ID, sleeping the thread while the clock catches up (tools and benchmarks)."""
        waited = 0
        while True:
            try:
                return self.next_id()
            except ClockBehind as behind:
                if waited + behind.wait_ms > max_wait_ms:
                    raise gave_up(behind.wait_ms, waited) from None
                time.sleep(behind.wait_ms / 1000)
                waited += behind.wait_ms


def gave_up(behind_ms: int, waited_ms: int) -> ClockMovedBackwards:
    log.error(
        "system clock moved backwards: still %d ms behind the last issued ID after waiting %d ms; "
        "refusing to mint IDs (check NTP)",
        behind_ms,
        waited_ms,
    )
    return ClockMovedBackwards(f"clock moved backwards by {behind_ms} ms; IDs cannot be minted safely")


def timestamp_ms(snowflake: int) -> int:
    """Unix-epoch milliseconds encoded in an ID."""
    return (snowflake >> TIMESTAMP_SHIFT) + EPOCH_MS


def worker_of(snowflake: int) -> int:
    return (snowflake >> WORKER_SHIFT) & MAX_WORKER_ID


def sequence_of(snowflake: int) -> int:
    return snowflake & MAX_SEQUENCE


def min_id_at(unix_ms: int) -> int:
    """The smallest ID any worker could mint at ``unix_ms`` (for time-range queries)."""
    return max(0, unix_ms - EPOCH_MS) << TIMESTAMP_SHIFT


def parse_id(value: object) -> int | None:
    """A wire ID (decimal string; integers tolerated) → int, or None if it is not a valid ID."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_ID else None
    if isinstance(value, str) and 0 < len(value) <= 20 and value.isascii() and value.isdigit():
        n = int(value)
        return n if n <= MAX_ID else None
    return None
