"""Declared dynamic settings: checks, command-line parsing, resolving stored documents."""

from __future__ import annotations

import pytest

from discovery.config.schema import Schema, Setting, merge
from discovery.errors import ConfigRejected

RATE = Setting("rate", float, 1.5, "per second", minimum=0.1, maximum=100)
COUNT = Setting("count", int, 3, "how many", minimum=1, maximum=10)
FLAG = Setting("flag", bool, False, "on or off")
MODE = Setting("mode", str, "a", "which", choices=("a", "b"))
SCHEMA = Schema([RATE, COUNT, FLAG, MODE])


def test_values_are_checked_and_coerced_by_type() -> None:
    assert RATE.check(2) == 2.0 and isinstance(RATE.check(2), float)
    assert COUNT.check(4.0) == 4 and isinstance(COUNT.check(4.0), int)
    for setting, bad, why in [
        (COUNT, 4.5, "integer"),
        (COUNT, True, "integer"),
        (RATE, "2", "number"),
        (RATE, float("nan"), "finite"),
        (RATE, 0.01, "at least 0.1"),
        (COUNT, 11, "at most 10"),
        (FLAG, 1, "true or false"),
        (MODE, "c", "one of a, b"),
        (MODE, 3, "string"),
    ]:
        with pytest.raises(ValueError, match=why):
            setting.check(bad)


def test_command_line_strings_parse_to_the_declared_type() -> None:
    assert SCHEMA.parse("rate", "2.5") == 2.5
    assert SCHEMA.parse("count", " 7 ") == 7
    assert SCHEMA.parse("flag", "On") is True and SCHEMA.parse("flag", "0") is False
    with pytest.raises(ConfigRejected, match="count='x': must be an integer"):
        SCHEMA.parse("count", "x")
    with pytest.raises(ConfigRejected, match="unknown setting"):
        SCHEMA.parse("nope", "1")


def test_declarations_are_checked_when_the_schema_is_built() -> None:
    with pytest.raises(ValueError, match="twice"):
        Schema([RATE, RATE])
    with pytest.raises(ValueError):
        Schema([Setting("bad", int, 0, "below its own minimum", minimum=1)])


def test_validate_lists_every_problem_and_none_means_default() -> None:
    assert SCHEMA.validate({"rate": 3, "count": None}) == {"rate": 3.0, "count": None}
    with pytest.raises(ConfigRejected) as refused:
        SCHEMA.validate({"rate": -1, "x": 1})
    assert refused.value.problems == ["rate=-1: must be at least 0.1", "x: unknown setting"]


def test_stored_values_a_version_cannot_use_fall_back_to_defaults() -> None:
    values, ignored = SCHEMA.resolve({"rate": 500, "count": 5, "from_a_newer_version": 1})
    assert values == {"rate": 1.5, "count": 5, "flag": False, "mode": "a"}
    assert ignored == ["rate=500: must be at most 100"]


def test_merge_sets_and_removes_keys_and_keeps_unknown_ones() -> None:
    assert merge({"rate": 2.0, "other": 1}, {"rate": None, "count": 4}) == {"other": 1, "count": 4}
