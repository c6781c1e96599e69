"""Backoff and giving up (chat/notify/retry.py)."""

from __future__ import annotations

import pytest

from chat.notify.retry import RetryPolicy

POLICY = RetryPolicy(max_attempts=5, max_age_ms=60_000, base_s=1.0, cap_s=30.0)


def test_waits_double_up_to_the_cap_with_jitter_between_half_and_whole() -> None:
    low = [POLICY.delay_s(n, jitter=0.0) for n in range(1, 9)]
    high = [POLICY.delay_s(n, jitter=0.999999) for n in range(1, 9)]
    assert low == [0.5, 1, 2, 4, 8, 15, 15, 15]
    assert high == pytest.approx([1, 2, 4, 8, 16, 30, 30, 30], abs=1e-4)
    assert POLICY.delay_s(10**6, jitter=0.5) == 22.5  # no overflow for absurd attempt counts


def test_retry_after_raises_the_wait_but_never_past_the_cap() -> None:
    assert POLICY.delay_s(1, jitter=0.0, retry_after_s=7) == 7
    assert POLICY.delay_s(4, jitter=0.0, retry_after_s=1) == 4  # the backoff is longer already
    assert POLICY.delay_s(1, jitter=0.0, retry_after_s=3600) == 30


def test_gives_up_after_max_attempts_or_max_age() -> None:
    assert POLICY.give_up(4, 59_999) is None
    assert POLICY.give_up(5, 0) == "after 5 attempts"
    assert POLICY.give_up(1, 60_000) == "older than 60 s"
    assert POLICY.expired(60_000) and not POLICY.expired(59_999)
