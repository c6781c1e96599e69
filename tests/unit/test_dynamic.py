"""chat.dynamic: every hot-room key declared once, documented, and refused when inconsistent."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat import dynamic
from discovery.errors import ConfigRejected

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_the_defaults_build_every_settings_value() -> None:
    values = dynamic.values(dynamic.SCHEMA.defaults())
    assert values.thresholds.hot_send_per_s == dynamic.SCHEMA.by_key["hot_send_per_s"].default
    assert values.flags["hot_coalescing"] is True and values.flags["hot_batching"] is True and values.flags["hot_waiting_room"] is True


def test_values_valid_alone_but_not_together_are_refused_with_the_reason() -> None:
    with pytest.raises(ConfigRejected, match="cassandra_breaker_"):
        dynamic.SCHEMA.check_document({"cassandra_breaker_caution_error_ratio": 0.9, "cassandra_breaker_critical_error_ratio": 0.5})
    with pytest.raises(ConfigRejected, match="lane_"):
        dynamic.SCHEMA.check_document({"lane_bot_weight": 9.0})  # above interactive_weight
    dynamic.SCHEMA.check_document({"lane_bot_weight": 2.0, "redis_breaker_open_s": 0.8})


def test_every_key_is_in_the_operations_guide() -> None:
    text = DOCS.read_text()
    for key in dynamic.SCHEMA.by_key:
        documented = key.replace("cassandra_breaker_", "…_breaker_").replace("redis_breaker_", "…_breaker_")
        assert f"`{documented}`" in text, f"{key} is not in docs/operations.md"
