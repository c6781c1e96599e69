"""Pending assignments: counted until the node's report catches up or the TTL passes (injected now)."""

from __future__ import annotations

from discovery.pending import PendingAssignments


def test_assignments_count_until_the_reported_load_shows_them() -> None:
    p = PendingAssignments(ttl_s=5)
    for i in range(3):
        p.add("a", reported=100, now=float(i))
    assert p.extra("a") == 3 and p.total_extra == 3
    p.on_report("a", 102)  # two of them connected
    assert p.extra("a") == 1 and p.total_extra == 1
    p.on_report("a", 103)
    assert p.extra("a") == 0 and p.total_extra == 0
    p.add("a", reported=103, now=3.0)  # a new round starts from the new report
    assert p.extra("a") == 1


def test_assignments_nobody_used_expire_after_the_ttl() -> None:
    p = PendingAssignments(ttl_s=5)
    p.add("a", reported=0, now=0.0)
    p.add("a", reported=0, now=2.0)
    p.add("b", reported=7, now=2.5)
    p.expire(now=4.9)
    assert p.total_extra == 3
    p.expire(now=5.0)
    assert p.extra("a") == 1 and p.total_extra == 2
    p.expire(now=7.5)
    assert p.total_extra == 0


def test_users_leaving_never_make_more_pending_than_were_handed_out() -> None:
    p = PendingAssignments(ttl_s=5)
    p.add("a", reported=50, now=0.0)
    p.on_report("a", 10)
    assert p.extra("a") == 1


def test_entries_from_before_a_catch_up_do_not_expire_the_next_round() -> None:
    p = PendingAssignments(ttl_s=5)
    p.add("a", reported=0, now=0.0)
    p.on_report("a", 1)  # caught up: the entry made at 0.0 is void
    p.add("a", reported=1, now=4.0)
    p.expire(now=5.0)  # the void entry expires: it must not take the live one with it
    assert p.extra("a") == 1


def test_a_node_that_left_is_forgotten() -> None:
    p = PendingAssignments(ttl_s=5)
    p.add("a", reported=0, now=0.0)
    p.add("b", reported=0, now=0.0)
    p.forget("a")
    assert p.extra("a") == 0 and p.total_extra == 1
    p.expire(now=10.0)
    assert p.total_extra == 0
