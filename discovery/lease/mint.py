"""Minting time of a leased worker ID (pure: numbers in, decisions out).

A worker ID's history is summed up by one durable record, the *floor record*:
``reserved_until_ms`` is the highest wall-clock millisecond any holder was ever
allowed to mint at (it never goes down), and ``minted_until_ms`` is set only by a
holder that shut down cleanly and knows the last millisecond it really minted at.

- A new holder starts strictly above :meth:`FloorRecord.start_floor`: every
  millisecond at or below it may already carry IDs of this worker.
- It mints only at milliseconds in ``(floor, reserved_until]``, where
  ``reserved_until`` was durably written *before* it mints under it; it writes a new
  reservation ahead of time (:class:`ReservePolicy`), never per mint.
- So a restart with the clock far behind, or the same worker ID taken by another node,
  can never reuse a (worker ID, millisecond) pair: :func:`mint_decision` waits briefly
  or refuses until the clock is past the floor.

All times are Unix-epoch milliseconds of the wall clock (what Snowflake IDs encode).
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MintAt:
    """Mint at this millisecond."""

    ms: int


@dataclass(frozen=True, slots=True)
class Wait:
    """The clock is just behind the floor: ask again after this many milliseconds."""

    ms: int


@dataclass(frozen=True, slots=True)
class Refuse:
    """Do not mint now (no lease, a clock far behind, a reservation not yet extended)."""

    reason: str
    retry_after_ms: int


MintDecision = MintAt | Wait | Refuse


def mint_decision(floor_ms: int, reserved_until_ms: int, now_ms: int, *, max_wait_ms: int = 1000, retry_after_ms: int = 1000) -> MintDecision:
    """May a worker mint at wall time ``now_ms``? Only at milliseconds in ``(floor_ms, reserved_until_ms]``.

    ``max_wait_ms``: how far behind the floor the clock may be and still be waited for
    (a restart inside the previous reservation); beyond it the caller refuses.
    """
    if now_ms > floor_ms:
        if now_ms <= reserved_until_ms:
            return MintAt(now_ms)
        return Refuse("the durable reservation of minting time has not kept up with the clock", retry_after_ms)
    behind = floor_ms + 1 - now_ms
    if behind <= max_wait_ms:
        return Wait(behind)
    return Refuse(f"the clock is {behind} ms behind this worker ID's floor (restarted inside an earlier reservation, or NTP)", min(behind, 60_000))


@dataclass(frozen=True, slots=True)
class FloorRecord:
    """The durable summary of one worker ID's minting history."""

    reserved_until_ms: int = 0  # highest millisecond any holder may have minted at; never decreases
    minted_until_ms: int | None = None  # last millisecond really minted, left by a clean shutdown
    holder: str = ""  # who wrote it last (for operators)

    def start_floor(self) -> int:
        """The next holder mints strictly above this."""
        return self.reserved_until_ms if self.minted_until_ms is None else self.minted_until_ms

    def reserve(self, until_ms: int, holder: str) -> FloorRecord:
        """A new reservation (held, not yet minted under): never below the stored one."""
        return FloorRecord(max(self.reserved_until_ms, until_ms), None, holder)

    def released(self, last_minted_ms: int | None, floor_ms: int, holder: str) -> FloorRecord:
        """The record a clean shutdown leaves. The next holder starts above ``last_minted_ms``
        but never below ``floor_ms`` (what earlier holders may have minted); None keeps the
        whole reservation as the floor."""
        if last_minted_ms is None:
            return FloorRecord(self.reserved_until_ms, None, holder)
        minted = min(max(last_minted_ms, floor_ms), self.reserved_until_ms)
        return FloorRecord(self.reserved_until_ms, minted, holder)

    def encode(self) -> bytes:
        return json.dumps({"reserved_until_ms": self.reserved_until_ms, "minted_until_ms": self.minted_until_ms, "holder": self.holder}).encode()

    @staticmethod
    def decode(data: bytes) -> FloorRecord:
        """Parse a stored record (empty = never used); raises ValueError if it is corrupt."""
        if not data.strip():
            return FloorRecord()
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"floor record is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError("floor record is not a JSON object")
        reserved = raw.get("reserved_until_ms")
        minted = raw.get("minted_until_ms")
        holder = raw.get("holder", "")
        if not isinstance(reserved, int) or isinstance(reserved, bool) or reserved < 0:
            raise ValueError("floor record: reserved_until_ms must be a non-negative integer")
        if minted is not None and (not isinstance(minted, int) or isinstance(minted, bool) or not 0 <= minted <= reserved):
            raise ValueError("floor record: minted_until_ms must be an integer in 0..reserved_until_ms or null")
        return FloorRecord(reserved, minted, holder if isinstance(holder, str) else "")


@dataclass(frozen=True, slots=True)
class ReservePolicy:
    """When and how far ahead to reserve minting time (rare writes, never per mint)."""

    ahead_ms: int = 10_000  # a reservation reaches this far past the clock
    refresh_below_ms: int = 5_000  # write a new one when less than this remains

    def __post_init__(self) -> None:
        if not 0 < self.refresh_below_ms < self.ahead_ms:
            raise ValueError("ReservePolicy: need 0 < refresh_below_ms < ahead_ms")

    def refresh_at(self, reserved_until_ms: int) -> int:
        """The wall-clock millisecond at which to write the next reservation."""
        return reserved_until_ms - self.refresh_below_ms

    def next_until(self, reserved_until_ms: int, now_ms: int) -> int:
        """The next reservation's end: never below the current one."""
        return max(reserved_until_ms, now_ms + self.ahead_ms)
