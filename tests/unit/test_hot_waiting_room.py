"""The waiting room with scripted clocks: arrival order, the per-second budget, tickets,
cancellation and expiry, a bounded line — and that every queued join gets in eventually."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from chat.hot.waiting_room import Admitted, Full, Queued, Ticket, WaitingRoom


def drain(room: WaitingRoom, now: float, *, limit_s: float = 10_000) -> list[tuple[float, Ticket]]:
    """Call admit() whenever next_admission() says, until nobody waits; (time, ticket) in order."""
    out = []
    while (at := room.next_admission(now)) is not None and at <= limit_s:
        now = at
        out += [(now, t) for t in room.admit(now)]
    return out


def test_under_budget_joins_go_straight_in() -> None:
    room = WaitingRoom(budget_per_s=2)
    first = room.arrive("a", 0.1)
    assert isinstance(first, Admitted) and first.ticket == Ticket("1", "a", 30.1)
    assert isinstance(room.arrive("b", 0.2), Admitted)
    assert room.arrive("c", 0.3) == Queued(1)  # the second's two slots are gone
    assert room.arrive("d", 1.5) == Queued(2)  # someone waits: no jumping the line, whatever the slots
    assert room.next_admission(0.4) == 1.0
    assert [t.user for t in room.admit(1.6)] == ["c", "d"]
    assert room.position("c") is None and len(room) == 0


def test_tickets_are_redeemed_once_by_their_user_before_they_expire() -> None:
    room = WaitingRoom(budget_per_s=1, ticket_ttl_s=5)
    room.arrive("a", 0)
    assert room.arrive("b", 0) == Queued(1)
    (ticket,) = room.admit(1)
    assert isinstance(room.arrive("b", 2), Admitted)  # a reconnect before redeeming: same ticket
    assert not room.redeem(ticket.id, "mallory", 2)
    assert not room.redeem("999", "b", 2)
    assert room.redeem(ticket.id, "b", 2)
    assert not room.redeem(ticket.id, "b", 2)  # once
    late = room.arrive("c", 3)
    assert isinstance(late, Admitted)
    assert not room.redeem(late.ticket.id, "c", 8.5)  # expired at 8


def test_positions_cancellation_and_expiry() -> None:
    room = WaitingRoom(budget_per_s=1, entry_ttl_s=10)
    room.arrive("x", 0)  # takes second 0's slot
    for i, user in enumerate("abcde"):
        assert room.arrive(user, 0) == Queued(i + 1)
    assert room.cancel("b") and not room.cancel("b")
    assert [room.position(u) for u in "acde"] == [1, 2, 3, 4]
    assert room.arrive("c", 6) == Queued(2)  # refreshes c's place (expires at 16 now)
    assert room.sweep(11) == ["a", "d", "e"]  # not refreshed for 10 s
    assert room.position("c") == 1 and room.arrive("f", 11) == Queued(2)
    room.arrive("g", 11)
    assert [t.user for _, t in drain(room, 11)] == ["c", "f", "g"]
    room2 = WaitingRoom(budget_per_s=1, entry_ttl_s=1)
    room2.arrive("x", 0)
    room2.arrive("gone", 0)
    room2.arrive("here", 0.5)
    assert [t.user for t in room2.admit(1.2)] == ["here"]  # the expired head is skipped, not admitted


def test_a_full_line_refuses_up_front_with_a_hint() -> None:
    room = WaitingRoom(budget_per_s=10, max_queue=50)
    for i in range(60):
        room.arrive(f"u{i}", 0)
    assert len(room) == 50
    assert room.arrive("late", 0) == Full(5000)  # 50 waiting at 10/s
    assert room.position("late") is None


def test_the_budget_changes_at_run_time_and_zero_closes_the_door() -> None:
    room = WaitingRoom(budget_per_s=0)
    assert room.arrive("a", 0) == Queued(1)
    assert room.next_admission(0) is None and room.admit(5) == []
    room.budget_per_s = 3
    assert room.next_admission(5) == 5 and len(room.admit(5)) == 1


def test_the_issue_scenario_500_joins_at_50_per_second() -> None:
    room = WaitingRoom(budget_per_s=50)
    answers = [room.arrive(f"u{i:03}", i / 500) for i in range(500)]
    assert sum(isinstance(a, Admitted) for a in answers) == 50
    assert [a.position for a in answers if isinstance(a, Queued)] == list(range(1, 451))
    admitted = drain(room, 1.0)
    assert [t.user for _, t in admitted] == [f"u{i:03}" for i in range(50, 500)]
    assert max(Counter(int(at) for at, _ in admitted).values()) == 50
    assert admitted[-1][0] == 9.0


@settings(max_examples=150, deadline=None)
@given(
    budget=st.integers(1, 20),
    steps=st.lists(st.tuples(st.floats(0, 0.7), st.booleans(), st.booleans()), min_size=1, max_size=200),
)
def test_admission_is_in_arrival_order_within_budget_and_complete(budget: int, steps: list[tuple[float, bool, bool]]) -> None:
    """Arrivals interleaved with admission rounds and cancellations: admissions follow arrival
    order, no clock second admits more than the budget, and everyone left in line gets in."""
    room = WaitingRoom(budget_per_s=budget, entry_ttl_s=1e9)
    now, arrived, cancelled = 0.0, [], set()
    admitted: list[tuple[float, str]] = []
    for i, (step, pump, cancel) in enumerate(steps):
        now += step
        user = f"u{i}"
        arrived.append(user)
        answer = room.arrive(user, now)
        assert not isinstance(answer, Full)
        if isinstance(answer, Admitted):
            admitted.append((now, user))
        if cancel and i % 3 == 0 and room.cancel(arrived[i // 2]):
            cancelled.add(arrived[i // 2])
        if pump:
            admitted += [(now, t.user) for t in room.admit(now)]
    admitted += [(at, t.user) for at, t in drain(room, now)]
    assert [u for _, u in admitted] == [u for u in arrived if u not in cancelled]
    assert max(Counter(int(at) for at, _ in admitted).values()) <= budget
    assert len(room) == 0
