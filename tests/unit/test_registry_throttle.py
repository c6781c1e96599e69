"""When load reports are written: rate limit, coalescing, draining at once (injected now)."""

from __future__ import annotations

import pytest

from discovery.registry.throttle import Load, ReportThrottle


def test_the_first_change_goes_at_once_then_one_write_per_interval() -> None:
    t = ReportThrottle(1.0, Load(0, False))
    assert t.offer(Load(1, False), now=10.0) == 0.0
    t.done(Load(1, False), now=10.0)
    assert t.offer(Load(2, False), now=10.2) == pytest.approx(0.8)
    assert t.offer(Load(3, False), now=10.5) == pytest.approx(0.5)  # coalesced: one write later, with the latest value
    assert t.wanted == Load(3, False)
    assert t.due(now=11.0) == 0.0


def test_nothing_to_write_when_the_backend_already_holds_it() -> None:
    t = ReportThrottle(1.0, Load(5, False))
    assert t.offer(Load(5, False), now=0.0) is None
    t.offer(Load(6, False), now=0.0)
    assert t.offer(Load(5, False), now=0.1) is None  # back to what is written: no write needed


def test_a_draining_change_is_due_at_once_even_inside_the_interval() -> None:
    t = ReportThrottle(1.0, Load(0, False))
    t.done(Load(4, False), now=10.0)
    assert t.offer(Load(4, True), now=10.1) == 0.0
