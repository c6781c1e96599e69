"""chat.hot's shared helpers: retry hints and settings values built from flat dynamic settings."""

from __future__ import annotations

import pytest

from chat.hot import from_settings, retry_ms
from chat.hot.batcher import BatcherConfig
from chat.hot.breaker import BreakerConfig
from chat.hot.detector import Thresholds


def test_retry_ms_rounds_up_and_is_never_zero() -> None:
    assert [retry_ms(s) for s in (0.0, 0.0001, 0.25, 1.0001)] == [1, 1, 250, 1001]


def test_settings_values_come_from_prefixed_keys_and_keep_their_defaults() -> None:
    snapshot = {"hot_send_per_s": 20, "hot_cool_s": 5.0, "cassandra_breaker_slow_s": 0.5, "batch_linger_s": 0.01, "other": 1}
    assert from_settings(Thresholds, snapshot) == Thresholds(hot_send_per_s=20, hot_cool_s=5.0)
    assert from_settings(BreakerConfig, snapshot, "cassandra_breaker_") == BreakerConfig(slow_s=0.5)
    assert from_settings(BreakerConfig, snapshot, "redis_breaker_") == BreakerConfig()
    assert from_settings(BatcherConfig, snapshot, "batch_").linger_s == 0.01
    with pytest.raises(ValueError):  # each key in bounds, the combination not
        from_settings(BreakerConfig, {"caution_error_ratio": 0.6, "critical_error_ratio": 0.5})
