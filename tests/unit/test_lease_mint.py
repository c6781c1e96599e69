"""Pure minting rules of a leased worker ID: floors, reservations, decisions."""

from __future__ import annotations

import pytest

from discovery.lease.mint import FloorRecord, MintAt, Refuse, ReservePolicy, Wait, mint_decision


def test_mints_only_strictly_above_the_floor_and_at_most_at_the_reservation() -> None:
    assert mint_decision(100, 200, 101) == MintAt(101)
    assert mint_decision(100, 200, 200) == MintAt(200)
    assert mint_decision(100, 200, 100) == Wait(1)
    refused = mint_decision(100, 200, 201)
    assert isinstance(refused, Refuse) and "reservation" in refused.reason


def test_a_clock_slightly_behind_waits_and_far_behind_refuses() -> None:
    assert mint_decision(10_000, 20_000, 9_500, max_wait_ms=1000) == Wait(501)
    refused = mint_decision(130_000, 140_000, 10_000, max_wait_ms=1000)
    assert isinstance(refused, Refuse) and "120001 ms behind" in refused.reason
    assert refused.retry_after_ms == 60_000  # capped: the caller retries, an operator looks at NTP


def test_no_reservation_means_no_minting_even_with_a_good_clock() -> None:
    assert isinstance(mint_decision(0, 0, 5), Refuse)


def test_start_floor_is_the_reservation_unless_a_clean_shutdown_marked_less() -> None:
    assert FloorRecord(500, None).start_floor() == 500
    assert FloorRecord(500, 320).start_floor() == 320


def test_a_reservation_never_lowers_the_stored_one_and_clears_the_clean_mark() -> None:
    record = FloorRecord(1000, 700, "a")
    assert record.reserve(900, "b") == FloorRecord(1000, None, "b")
    assert record.reserve(1500, "b") == FloorRecord(1500, None, "b")


def test_release_clamps_the_last_minted_mark_between_the_floor_and_the_reservation() -> None:
    held = FloorRecord(1000, None, "a")
    assert held.released(None, 400, "a") == FloorRecord(1000, None, "a")
    assert held.released(800, 400, "a").start_floor() == 800
    assert held.released(10, 400, "a").start_floor() == 400  # never below what earlier holders may have used
    assert held.released(5000, 400, "a").start_floor() == 1000


def test_floor_records_round_trip_and_corrupt_ones_are_refused() -> None:
    record = FloorRecord(123, 100, "n1@abc")
    assert FloorRecord.decode(record.encode()) == record
    assert FloorRecord.decode(b"") == FloorRecord()
    for bad in (b"{", b"[1]", b'{"reserved_until_ms": -1}', b'{"reserved_until_ms": true}', b'{"reserved_until_ms": 5, "minted_until_ms": 6}'):
        with pytest.raises(ValueError):
            FloorRecord.decode(bad)


def test_reserve_policy_refreshes_before_the_end_and_reaches_ahead() -> None:
    policy = ReservePolicy(ahead_ms=10_000, refresh_below_ms=5_000)
    assert policy.refresh_at(50_000) == 45_000
    assert policy.next_until(50_000, 46_000) == 56_000
    assert policy.next_until(90_000, 46_000) == 90_000  # a clock behind never shrinks it
    with pytest.raises(ValueError):
        ReservePolicy(ahead_ms=100, refresh_below_ms=100)
