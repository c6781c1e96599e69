"""Session liveness deadlines, with an injected clock (plain numbers)."""

from __future__ import annotations

from discovery.liveness import Liveness


def test_an_answer_proves_the_session_alive_for_one_timeout_after_the_send() -> None:
    live = Liveness(timeout_s=10)
    assert not live.certainly_alive(7, now=0, margin_s=0)
    live.on_response(7, sent_at=100)
    assert live.certainly_alive(7, now=107.9, margin_s=2)
    assert not live.certainly_alive(7, now=108.0, margin_s=2)
    assert not live.certainly_alive(8, now=101, margin_s=2)  # another session proves nothing


def test_late_answers_to_older_sends_never_move_the_deadline_back() -> None:
    live = Liveness(timeout_s=10)
    live.on_response(7, sent_at=100)
    live.on_response(7, sent_at=95)
    assert live.alive_until == 110 and live.last_good == 100


def test_a_new_session_replaces_the_old_and_lost_forgets_everything() -> None:
    live = Liveness(timeout_s=10)
    live.on_response(7, sent_at=100)
    live.on_response(9, sent_at=99)
    assert live.session_id == 9 and live.alive_until == 109
    live.on_lost()
    assert live.session_id is None and not live.certainly_alive(9, now=100, margin_s=0)


def test_the_negotiated_timeout_recomputes_the_deadline() -> None:
    live = Liveness(timeout_s=10)
    live.on_response(7, sent_at=100)
    live.set_timeout(4)
    assert live.alive_until == 104


def test_after_lost_late_answers_on_the_lost_session_revive_nothing_but_its_deadline_is_kept() -> None:
    live = Liveness(timeout_s=10)
    live.on_response(7, sent_at=100)
    live.on_lost()
    live.on_response(7, sent_at=101)  # an answer posted before LOST, processed after it
    assert live.session_id is None and not live.certainly_alive(7, now=102, margin_s=0)
    assert live.deadline_of(7) == 110 and live.deadline_of(8) == float("-inf")
    live.on_response(9, sent_at=120)
    assert live.session_id == 9 and live.deadline_of(9) == 130
