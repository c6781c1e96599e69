"""Per-room limits and the lanes scheduler with scripted clocks: refusals with retry_after_ms,
shares, caps, bounded lanes — and that a bot backlog never delays interactive work by more than
one item."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.hot.limits import Lane, LaneConfig, Lanes, RoomLimiter, lane_for


def test_room_limits_are_per_room_bounded_and_dynamic() -> None:
    limiter = RoomLimiter(per_s=10, burst=2, max_rooms=2)
    assert limiter.take(1, 0) is None and limiter.take(1, 0) is None
    assert limiter.take(1, 0) == 100  # the next token in 0.1 s
    assert limiter.take(2, 0) is None
    limiter.per_s = 1000  # changed at run time: applies to existing rooms too
    assert limiter.take(1, 0.002) is None
    limiter.take(3, 0)  # evicts the least recently used room (2)
    assert limiter.take(2, 0) is None and limiter.take(2, 0) is None
    limiter.forget(2)
    assert limiter.take(2, 0) is None


def test_lane_for() -> None:
    assert lane_for(bot=True, hot=True) is Lane.BOT
    assert lane_for(bot=False, hot=True) is Lane.HOT
    assert lane_for(bot=False, hot=False) is Lane.INTERACTIVE


def run(lanes: Lanes[str], until: float, step: float = 0.001, start: float = 0.0) -> list[tuple[float, Lane, str]]:
    """take() every ``step`` seconds, as much as it gives, up to ``until``."""
    out = []
    for k in range(int(start / step), int(until / step)):
        now = k * step
        while (got := lanes.take(now)) is not None:
            out.append((now, *got))
    return out


def test_with_budget_to_spare_work_goes_straight_through() -> None:
    lanes: Lanes[str] = Lanes(now=0.0)
    assert lanes.next_at(0) is None
    assert lanes.offer(Lane.INTERACTIVE, "hi", 0) is None
    assert lanes.next_at(0) == 0
    assert lanes.take(0) == (Lane.INTERACTIVE, "hi")
    assert lanes.take(0) is None


def test_busy_lanes_share_the_budget_by_weight_and_caps_hold() -> None:
    cfg = LaneConfig(budget_per_s=1000, burst_s=0.01, interactive_queue=10_000, hot_queue=10_000, bot_queue=10_000)
    lanes: Lanes[str] = Lanes(cfg, now=0.0)
    for i in range(3000):
        for lane in Lane:
            assert lanes.offer(lane, f"{lane.name}{i}", 0) is None
    served = Counter(lane for _, lane, _ in run(lanes, 2.0))
    assert sum(served.values()) == pytest.approx(2000, abs=20)  # the budget
    assert served[Lane.INTERACTIVE] / served[Lane.BOT] == pytest.approx(6, rel=0.05)
    assert served[Lane.HOT] / served[Lane.BOT] == pytest.approx(3, rel=0.05)
    # Bots alone still get no more than their cap (20 %).
    bots: Lanes[str] = Lanes(cfg, now=0.0)
    for i in range(3000):
        bots.offer(Lane.BOT, str(i), 0)
    assert len(run(bots, 2.0)) == pytest.approx(400, abs=15)
    while bots.take(2.0) is not None:
        pass
    assert 2.0 < (bots.next_at(2.0) or 0) <= 2.0 + 1 / 200  # the cap's next token


def test_an_item_costlier_than_the_burst_waits_for_a_full_bucket_not_forever() -> None:
    lanes: Lanes[str] = Lanes(LaneConfig(budget_per_s=10, burst_s=0.1), now=0.0)  # burst 1
    lanes.offer(Lane.INTERACTIVE, "big", 0, cost=5)
    lanes.offer(Lane.INTERACTIVE, "next", 0)
    assert lanes.take(0) == (Lane.INTERACTIVE, "big")  # the bucket is full: it goes, into debt
    assert lanes.take(0.45) is None  # the debt (4) and one token: 0.5 s
    assert lanes.take(0.5) == (Lane.INTERACTIVE, "next")


def test_a_full_lane_refuses_up_front_and_the_others_go_on() -> None:
    lanes: Lanes[str] = Lanes(LaneConfig(budget_per_s=100, bot_queue=50), now=0.0)
    for i in range(50):
        assert lanes.offer(Lane.BOT, str(i), 0) is None
    assert lanes.offer(Lane.BOT, "more", 0) == 5000  # 50 items at the bots' guaranteed 10/s
    assert lanes.queued(Lane.BOT) == 50
    assert lanes.offer(Lane.INTERACTIVE, "hi", 0) is None
    assert lanes.take(0) == (Lane.INTERACTIVE, "hi")


def test_config_changes_at_run_time_and_is_validated() -> None:
    lanes: Lanes[str] = Lanes(LaneConfig(budget_per_s=10, burst_s=0.1), now=0.0)
    for i in range(500):
        lanes.offer(Lane.INTERACTIVE, str(i), 0)
    assert len(run(lanes, 1.0)) == pytest.approx(11, abs=1)
    lanes.config = LaneConfig(budget_per_s=100, burst_s=0.1)
    assert len(run(lanes, 2.0, start=1.0)) == pytest.approx(100, abs=2)
    for bad in ({"budget_per_s": 0}, {"bot_weight": 7}, {"bot_max_share": 0}, {"hot_queue": 0}):
        with pytest.raises(ValueError):
            LaneConfig(**bad)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(
    bot_backlog=st.integers(0, 3000),
    hot_backlog=st.integers(0, 500),
    weights=st.tuples(st.floats(1, 10), st.floats(0.1, 10), st.floats(0.1, 1)),
    arrivals=st.lists(st.floats(0, 2), min_size=1, max_size=200),
    budget=st.floats(50, 2000),
)
def test_interactive_work_waits_behind_one_bot_item_at_most(
    bot_backlog: int, hot_backlog: int, weights: tuple[float, float, float], arrivals: list[float], budget: float
) -> None:
    """While interactive work waits, at most one bot item is served before the next interactive
    one — however many bot items are queued, and whatever the weights (interactive ≥ bot)."""
    i_weight, h_weight, b_ratio = weights
    cfg = LaneConfig(
        budget_per_s=budget,
        interactive_weight=i_weight,
        hot_weight=h_weight,
        bot_weight=i_weight * b_ratio,
        bot_max_share=1.0,  # no cap: the weights alone must hold the line
        bot_queue=5000,
        hot_queue=5000,
    )
    lanes: Lanes[str] = Lanes(cfg, now=0.0)
    for i in range(bot_backlog):
        lanes.offer(Lane.BOT, f"b{i}", 0)
    for i in range(hot_backlog):
        lanes.offer(Lane.HOT, f"h{i}", 0)
    arrivals = sorted(arrivals)
    bots_ahead = 0  # bot items served since interactive work began waiting or was last served
    step = 0.002
    for k in range(int(3 / step)):
        now = k * step
        while arrivals and arrivals[0] <= now:
            if lanes.queued(Lane.INTERACTIVE) == 0:
                bots_ahead = 0
            assert lanes.offer(Lane.INTERACTIVE, "i", arrivals.pop(0)) is None
        while (got := lanes.take(now)) is not None:
            if got[0] is Lane.INTERACTIVE:
                bots_ahead = 0
            elif got[0] is Lane.BOT and lanes.queued(Lane.INTERACTIVE):
                bots_ahead += 1
                assert bots_ahead <= 1, "interactive work waited behind more than one bot item"
    assert not arrivals


def test_admit_spends_at_once_only_when_nothing_waits_and_the_budget_allows() -> None:
    lanes: Lanes[str] = Lanes(LaneConfig(budget_per_s=10, burst_s=0.2, bot_max_share=0.1), now=0.0)
    assert lanes.admit(Lane.INTERACTIVE, 0.0) and lanes.admit(Lane.INTERACTIVE, 0.0)  # the burst: 2 tokens
    assert not lanes.admit(Lane.INTERACTIVE, 0.0)  # spent: offer it instead
    assert lanes.offer(Lane.INTERACTIVE, "waits", 0.0) is None
    assert not lanes.admit(Lane.HOT, 1.0)  # something waits: no jumping the line
    assert lanes.take(1.0) == (Lane.INTERACTIVE, "waits")
    assert lanes.admit(Lane.BOT, 1.0) and not lanes.admit(Lane.BOT, 1.0)  # the bot's cap: 1 token/s
    assert lanes.admit(Lane.INTERACTIVE, 1.1)  # one token later
