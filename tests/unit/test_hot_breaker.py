"""The per-dependency circuit breaker with scripted clocks: health from errors and latency,
failing fast, half-open probing, recovery — and no admission while CRITICAL but probes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.hot.breaker import Breaker, BreakerConfig, Health

CFG = BreakerConfig(window_s=10, min_requests=10, slow_s=1.0, open_s=2, max_open_s=8, probes=2, probe_timeout_s=3)


def feed(b: Breaker, now: float, n: int, *, ok: bool = True, latency_s: float = 0.01) -> list[Health]:
    """``n`` requests at ``now``; the healths they moved to."""
    return [t.new for _ in range(n) if (t := b.record(now, ok, latency_s)) is not None]


def critical() -> Breaker:
    b = Breaker("cassandra", CFG)
    feed(b, 0, 10)
    assert feed(b, 1, 10, ok=False) == [Health.CAUTION, Health.CRITICAL]
    return b


def test_errors_move_it_through_caution_to_critical() -> None:
    b = Breaker("cassandra", CFG)
    assert feed(b, 0, 9, ok=False) == []  # under min_requests: no verdict
    b = Breaker("cassandra", CFG)
    feed(b, 0, 100)
    assert feed(b, 0, 6, ok=False) == [Health.CAUTION]  # 6 of 106 failed
    assert feed(b, 1, 100) == []  # 6 of 206: under the caution line, above its recovery line
    assert feed(b, 1, 100) == [Health.HEALTHY]  # 6 of 306 < 5 % × 0.5
    b2 = critical()
    assert b2.ratios() == (0.5, 0.0)


def test_slow_requests_count_like_errors() -> None:
    b = Breaker("redis", CFG)
    feed(b, 0, 20)
    assert feed(b, 1, 5, latency_s=2.0) == [Health.CAUTION]  # 5 of 25 slow = 20 %
    assert feed(b, 1, 100, latency_s=2.0)[-1] is Health.CRITICAL


def test_critical_fails_fast_then_probes_then_recovers() -> None:
    b = critical()
    assert b.allow(1.5) == 1500  # fail fast until 1 + open_s
    assert b.allow(3.0) is None and b.allow(3.0) is None  # two probes
    assert b.allow(3.1) == 2900  # the round's verdict is awaited
    assert b.record(3.2, True, 0.05) is None
    t = b.record(3.2, True, 0.05)
    assert t is not None and (t.old, t.new) == (Health.CRITICAL, Health.HEALTHY)
    assert b.allow(3.3) is None
    assert b.ratios() == (0.0, 0.0)  # the errors that tripped it are forgotten
    assert b.refused == 2


def test_a_failed_or_slow_probe_fails_fast_again_for_longer() -> None:
    b = critical()
    assert b.allow(3) is None
    b.record(3.5, False, 0.5)
    assert b.allow(3.6) == 3900  # 2 × open_s from the failure
    assert b.allow(7.5) is None
    b.record(7.6, True, 1.5)  # answered, but slowly
    assert b.allow(7.7) == pytest.approx(7900)  # capped at max_open_s
    assert b.health is Health.CRITICAL


def test_a_round_without_verdict_counts_as_failed() -> None:
    b = critical()
    assert b.allow(3) is None and b.allow(3) is None  # both probes hang
    assert b.allow(6) == 4000  # the round timed out: fail fast, longer
    assert b.allow(10) is None


def test_old_requests_do_not_decide_while_failing_fast() -> None:
    b = critical()
    for _ in range(50):  # the frozen backlog times out
        assert b.record(2.0, False, 2.0) is None
    assert b.open_until == 3.0


def test_poll_clears_caution_when_the_window_empties() -> None:
    b = Breaker("redis", CFG)
    feed(b, 0, 20, ok=False)
    assert b.health is Health.CRITICAL
    b2 = Breaker("redis", CFG)
    feed(b2, 0, 100)
    feed(b2, 0, 10, ok=False)
    assert b2.health is Health.CAUTION
    assert b2.poll(5) is None
    t = b2.poll(11)
    assert t is not None and t.new is Health.HEALTHY


def test_config_is_replaceable_and_validated() -> None:
    b = Breaker("redis", CFG)
    feed(b, 0, 9, ok=False)
    b.config = BreakerConfig(min_requests=5, window_s=5)
    assert feed(b, 0.1, 5, ok=False) == [Health.CRITICAL]  # the new window starts empty
    for bad in ({"window_s": 0}, {"probes": 0}, {"caution_error_ratio": 0.6}, {"max_open_s": 1}, {"recover_ratio": 0}):
        with pytest.raises(ValueError):
            BreakerConfig(**bad)  # type: ignore[arg-type]


ops = st.lists(
    st.tuples(st.floats(0, 0.5), st.sampled_from(["allow", "ok", "error", "slow"])),
    min_size=1,
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(ops=ops)
def test_nothing_but_probes_is_admitted_while_critical(ops: list[tuple[float, str]]) -> None:
    b = Breaker("cassandra", CFG)
    now = 0.0
    admitted: dict[float, int] = {}  # fail-fast span (by its end) → requests admitted after it
    for step, op in ops:
        now += step
        if op == "allow":
            was_critical, open_until = b.health is Health.CRITICAL, b.open_until
            wait = b.allow(now)
            if was_critical and wait is None:
                assert now >= open_until  # never during fail-fast
                admitted[b.open_until] = admitted.get(b.open_until, 0) + 1
                assert admitted[b.open_until] <= CFG.probes  # at most one round of probes per span
            if wait is not None:
                assert b.health is Health.CRITICAL and wait >= 1
        else:
            b.record(now, op != "error", 2.0 if op == "slow" else 0.01)


def test_a_stall_turns_it_critical_at_once_whatever_the_window_holds() -> None:
    b = Breaker("cassandra", CFG)
    feed(b, 0, 500)  # a window full of successes: ratios alone would take seconds to move
    assert b.stall(1.5, waiting=2, silent_s=1.5) is None  # too few waiting
    assert b.stall(1.5, waiting=5, silent_s=0.5) is None  # it still answers (slowly)
    moved = b.stall(1.5, waiting=3, silent_s=1.0)
    assert moved is not None and moved.new is Health.CRITICAL
    assert b.allow(1.6) == 1900  # fails fast for open_s
    assert b.stall(2.0, waiting=9, silent_s=9) is None  # critical already
