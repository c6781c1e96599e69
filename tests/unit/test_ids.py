from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.errors import ClockMovedBackwards
from chat.ids import (
    EPOCH_MS,
    MAX_SEQUENCE,
    ClockBehind,
    SnowflakeGenerator,
    min_id_at,
    parse_id,
    sequence_of,
    timestamp_ms,
    worker_of,
)
from chat.minter import FixedWorker, IdMinter


class FakeClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_million_ids_are_unique_and_strictly_increasing() -> None:
    gen = SnowflakeGenerator(5)
    ids = [gen.next_id_blocking() for _ in range(1_000_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert len(set(ids)) == len(ids)


@settings(max_examples=200, deadline=None)
@given(
    worker=st.integers(0, 1023),
    steps=st.lists(st.integers(-50, 50), min_size=1, max_size=300),
)
def test_ids_stay_unique_and_ordered_under_clock_jitter(worker: int, steps: list[int]) -> None:
    """Whatever the clock does (including going back), issued IDs never repeat or go down."""
    clock = FakeClock(EPOCH_MS + 10_000_000)
    gen = SnowflakeGenerator(worker, clock=clock)
    issued: list[int] = []
    for step in steps:
        clock.ms += step
        try:
            issued.append(gen.next_id())
        except ClockBehind as behind:
            assert behind.wait_ms >= 1
    assert issued == sorted(set(issued))
    assert all(worker_of(i) == worker for i in issued)


def test_layout_and_decoding() -> None:
    clock = FakeClock(EPOCH_MS + 123_456)
    gen = SnowflakeGenerator(1023, clock=clock)
    a, b = gen.next_id(), gen.next_id()
    assert timestamp_ms(a) == EPOCH_MS + 123_456
    assert worker_of(a) == 1023
    assert (sequence_of(a), sequence_of(b)) == (0, 1)
    assert a == (123_456 << 22) | (1023 << 12)
    assert min_id_at(EPOCH_MS + 123_456) <= a < min_id_at(EPOCH_MS + 123_457)
    assert gen.last_id == b


def test_sequence_exhaustion_waits_for_next_millisecond() -> None:
    clock = FakeClock(EPOCH_MS + 1)
    gen = SnowflakeGenerator(0, clock=clock)
    for _ in range(MAX_SEQUENCE + 1):
        gen.next_id()
    with pytest.raises(ClockBehind) as behind:
        gen.next_id()
    assert behind.value.wait_ms == 1
    clock.ms += 1
    assert sequence_of(gen.next_id()) == 0


def test_clock_backwards_reports_how_far() -> None:
    clock = FakeClock(EPOCH_MS + 5000)
    gen = SnowflakeGenerator(0, clock=clock)
    gen.next_id()
    clock.ms -= 300
    with pytest.raises(ClockBehind) as behind:
        gen.next_id()
    assert behind.value.wait_ms == 300


def test_worker_id_range() -> None:
    with pytest.raises(ValueError):
        SnowflakeGenerator(1024)
    with pytest.raises(ValueError):
        SnowflakeGenerator(-1)


async def test_minter_waits_out_a_small_step_back() -> None:
    clock = FakeClock(EPOCH_MS + 5000)
    minter = IdMinter(FixedWorker(0, clock=clock), max_wait_ms=500)
    first = await minter.mint()
    clock.ms -= 20

    async def advance() -> None:
        await asyncio.sleep(0)
        clock.ms += 25

    task = asyncio.create_task(advance())
    second = await minter.mint()
    await task
    assert second > first


async def test_minter_fails_loudly_past_its_bound(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(EPOCH_MS + 50_000)
    minter = IdMinter(FixedWorker(0, clock=clock), max_wait_ms=100)
    await minter.mint()
    clock.ms -= 10_000  # NTP stepped the clock back ten seconds
    with pytest.raises(ClockMovedBackwards):
        await minter.mint()
    assert "clock moved backwards" in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [("123", 123), (123, 123), ("0", 0), ("", None), ("-1", None), ("1e5", None), ("abc", None), (True, None),
     ("9" * 25, None), (None, None), ([1], None), (" 12", None), ("١٢", None)],
)
def test_parse_id(value: object, expected: int | None) -> None:
    assert parse_id(value) == expected
