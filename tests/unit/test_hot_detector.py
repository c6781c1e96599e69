"""The hot-room detector with scripted clocks: rates, hysteresis, the cluster exchange, pins,
dynamic thresholds and bounded memory — no sleeping, no event loop."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.hot.detector import FANOUT, FETCH, JOIN, SEND, HotDetector, Rates, Thresholds, Transition

ROOM = 42
TICK_S = 0.25


def steady(rate: float, start: float, end: float) -> list[float]:
    """Event times at ``rate``/s, evenly spaced over [start, end)."""
    n = int((end - start) * rate)
    return [start + i / rate for i in range(n)]


def drive(d: HotDetector, times: Iterable[float], *, until: float, room: int = ROOM, kind: int = SEND, start: float = 0.0) -> list[Transition]:
    """Feed event times (ascending) and tick every TICK_S from ``start`` up to ``until``."""
    out: list[Transition] = []
    k = int(start / TICK_S) + 1
    for t in times:
        while k * TICK_S <= t:
            out += d.tick(k * TICK_S)
            k += 1
        d.count(room, kind, t)
    while k * TICK_S <= until:
        out += d.tick(k * TICK_S)
        k += 1
    return out


def test_a_quiet_room_is_counted_but_never_judged() -> None:
    d = HotDetector(now=0.0)
    assert drive(d, steady(2, 0, 20), until=20) == []
    assert not d.is_hot(ROOM)
    assert d.candidates(20) == {} and d.snapshot(20) == {}
    assert d.local_rates(ROOM, 19.99).send == pytest.approx(2, abs=1)


def test_a_burst_is_hot_within_a_second_and_cools_only_after_cool_s() -> None:
    d = HotDetector(Thresholds(hot_send_per_s=50, hot_cool_s=10), now=0.0)
    transitions = drive(d, steady(300, 5, 15), until=40)
    assert [(t.hot, t.cause) for t in transitions] == [(True, "rates"), (False, "rates")]
    hot, cooled = transitions
    assert 5 < hot.at <= 6
    # Below the line (25/s) from the stop at 15 (the window empties by 16), then 10 s more.
    assert 15 + 10 <= cooled.at <= 16 + 10 + TICK_S
    assert not d.is_hot(ROOM)


def test_a_return_above_the_cool_line_restarts_the_cool_down() -> None:
    d = HotDetector(Thresholds(hot_send_per_s=50, hot_cool_s=10), now=0.0)
    times = steady(100, 0, 5) + steady(30, 12, 14)  # 30/s is below the threshold, above the line (25)
    transitions = drive(d, times, until=40)
    assert [t.hot for t in transitions] == [True, False]
    assert transitions[1].at >= 14 + 10


def test_each_kind_has_its_threshold() -> None:
    d = HotDetector(Thresholds(hot_fanout_per_s=1000, hot_fetch_per_s=10, hot_join_per_s=10), now=0.0)
    for kind, room in ((FETCH, 1), (JOIN, 2)):
        drive(d, steady(20, 0, 2), until=2, room=room, kind=kind)
    for t in steady(20, 2, 4):
        d.count(3, FANOUT, t, n=100)  # a message delivered to 100 local sockets
    d.tick(4)
    assert d.is_hot(1) and d.is_hot(2) and d.is_hot(3)
    assert d.snapshot(4)[3].rates.fanout == pytest.approx(2000, rel=0.1)


def test_rooms_busy_only_across_the_cluster_are_hot_on_every_node() -> None:
    a = HotDetector(Thresholds(hot_send_per_s=50, hot_cool_s=5), now=0.0, node_id="a")
    b = HotDetector(Thresholds(hot_send_per_s=50, hot_cool_s=5), now=0.0, node_id="b")
    for t in steady(30, 0, 3):  # 30/s on each node: 60/s together
        a.count(ROOM, SEND, t)
        b.count(ROOM, SEND, t)
    assert a.tick(3) == [] and b.tick(3) == []  # neither is hot alone
    for room, rates in a.candidates(3).items():
        b.merge_remote("a", room, rates, 3)
        b.merge_remote("b", room, Rates(send=1000), 3)  # our own report echoed back: ignored
    for room, rates in b.candidates(3).items():
        a.merge_remote("b", room, rates, 3)
    assert [t.hot for t in a.tick(3.1)] == [True] and [t.hot for t in b.tick(3.1)] == [True]
    assert b.snapshot(3.1)[ROOM].rates.send == pytest.approx(60, abs=3)
    # The exchange stops and so does the traffic: the reports expire (3 s), then the room cools.
    assert a.rates(ROOM, 6.2) == Rates()
    assert [t.hot for t in drive(a, [], start=3.1, until=20)] == [False]


def test_pins_override_the_rates_until_unpinned() -> None:
    d = HotDetector(now=0.0, max_pins=1)
    assert d.pin(ROOM, True, 1) == Transition(ROOM, True, 1, "pin")
    assert d.is_hot(ROOM) and d.snapshot(1)[ROOM].pinned is True
    assert d.pin(ROOM, True, 2) is None  # already so
    with pytest.raises(ValueError):
        d.pin(ROOM + 1, True, 2)
    assert d.unpin(ROOM, 3) == Transition(ROOM, False, 3, "unpin")
    drive(d, steady(300, 3, 5), start=3, until=5)  # hot by rates
    assert d.is_hot(ROOM)
    assert d.pin(ROOM, False, 5) == Transition(ROOM, False, 5, "pin")  # protection off by hand
    assert d.tick(5.5) == [] and not d.is_hot(ROOM)
    assert d.unpin(ROOM, 6) == Transition(ROOM, True, 6, "unpin")  # still hot by its rates


def test_thresholds_change_at_run_time() -> None:
    d = HotDetector(now=0.0)
    transitions = drive(d, steady(30, 0, 3), until=3)
    assert transitions == [] and not d.is_hot(ROOM)
    d.thresholds = Thresholds(hot_send_per_s=20)
    assert [t.hot for t in drive(d, steady(30, 3, 4), start=3, until=4)] == [True]
    for bad in ({"hot_send_per_s": 0}, {"hot_cool_ratio": 1.0}, {"hot_local_floor_ratio": 0}, {"hot_cool_s": -1}):
        with pytest.raises(ValueError):
            Thresholds(**bad)  # type: ignore[arg-type]


def test_idle_rooms_are_forgotten_and_the_room_count_is_capped() -> None:
    d = HotDetector(now=0.0, idle_s=10, max_rooms=100)
    for room in range(1000):  # churn: 1,000 rooms with one event each
        d.count(room, SEND, room / 100)
        d.count(ROOM + 10_000, SEND, room / 100)  # … and one busy room throughout
    assert d.tracked <= 200
    assert d.local_rates(ROOM + 10_000, 9.99).send > 50
    d.tick(10)
    d.tick(20)
    assert d.tracked == 0


@settings(max_examples=40, deadline=None)
@given(
    threshold=st.floats(10, 200),
    ratio=st.floats(0.5, 2.0),
    jitter=st.floats(0, 0.45),
    phase=st.floats(0, 1),
)
def test_a_steady_rate_never_flaps(threshold: float, ratio: float, jitter: float, phase: float) -> None:
    """Whatever the rate near the threshold, a steady stream changes state at most once."""
    rate = threshold * ratio
    d = HotDetector(Thresholds(hot_send_per_s=threshold, hot_cool_s=2), now=0.0)
    times = [phase + (i + jitter * ((i * 7919) % 3 - 1)) / rate for i in range(int(20 * rate))]
    transitions = drive(d, times, until=times[-1])
    assert len(transitions) <= 1
    if rate >= threshold + 3:  # above the counting noise: it is seen
        assert [t.hot for t in transitions] == [True]


@settings(max_examples=40, deadline=None)
@given(cool_s=st.floats(0, 20), after=st.floats(0, 0.4), hot_for=st.floats(1, 10))
def test_cool_down_comes_only_after_cool_s_below_the_line(cool_s: float, after: float, hot_for: float) -> None:
    """A room below the cool line (even at a trickle, clear of the counting noise) cools no sooner
    than cool_s after the rate fell, and no later than cool_s after the estimate has let go of the
    burst (the two-bucket estimate spreads a bucket's events over it: two windows at most)."""
    d = HotDetector(Thresholds(hot_send_per_s=50, hot_cool_s=cool_s), now=0.0)
    stop = 1 + hot_for
    trickle = steady(50 * after, stop, stop + 60) if after > 0.02 else []
    transitions = drive(d, steady(200, 1, stop) + trickle, until=stop + 60)
    assert [t.hot for t in transitions] == [True, False]
    assert stop + cool_s <= transitions[1].at <= stop + 2 + cool_s + TICK_S
