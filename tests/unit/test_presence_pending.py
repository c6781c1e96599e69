"""presence.pending: what a node recorded and has not written yet (pure)."""

from __future__ import annotations

from presence.pending import Batch, PendingWrites
from presence.state import CLOSE, HEARTBEAT, OFFLINE, ONLINE, UserPresence
from tests.support.presence import T0


def kinds(batch: Batch) -> list[tuple[str, str]]:
    return [(e.kind, e.user) for part in batch.events(2) for e in part]


def test_the_newest_heartbeat_of_a_device_wins_and_closes_come_last() -> None:
    pending = PendingWrites(10)
    pending.beat("a", "s", T0, hello=True)
    pending.beat("b", "s", T0)
    pending.beat("a", "s", T0 + 5)
    pending.close("a", "s", T0 + 6)
    pending.beat("c", "s", T0 + 7)
    batch = pending.take(100)
    assert len(pending) == 0 and batch.beats[("a", "s")] == T0 + 5
    assert kinds(batch) == [(HEARTBEAT, "a"), (HEARTBEAT, "b"), (HEARTBEAT, "c"), (CLOSE, "a")]


def test_bounded_new_devices_are_refused_waiting_ones_still_update() -> None:
    pending = PendingWrites(2)
    assert pending.beat("a", "s", T0) and pending.beat("b", "s", T0)
    assert pending.full
    assert not pending.beat("c", "s", T0)
    assert not pending.close("a", "s", T0)  # a close is a new entry too
    assert pending.beat("a", "s", T0 + 1)
    assert (len(pending), pending.dropped) == (2, 2)


def test_take_bounded_keeps_each_close_with_its_heartbeat() -> None:
    pending = PendingWrites(100)
    for user in "abcde":
        pending.beat(user, "s", T0)
    pending.close("e", "s", T0 + 1)
    first = pending.take(3)
    assert kinds(first) == [(HEARTBEAT, "e"), (HEARTBEAT, "a"), (CLOSE, "e")]
    assert kinds(pending.take(3)) == [(HEARTBEAT, "b"), (HEARTBEAT, "c"), (HEARTBEAT, "d")]
    assert len(pending) == 0


def test_a_restored_batch_waits_behind_newer_entries() -> None:
    pending = PendingWrites(100)
    pending.beat("a", "s", T0)
    pending.beat("b", "s", T0)
    batch = pending.take(100)
    pending.beat("a", "s", T0 + 5)  # newer than the one in flight
    pending.close("b", "s", T0 + 6)
    pending.restore(batch)
    again = pending.take(100)
    assert again.beats == {("a", "s"): T0 + 5, ("b", "s"): T0}
    assert kinds(again) == [(HEARTBEAT, "a"), (HEARTBEAT, "b"), (CLOSE, "b")]


def test_overlay_shows_unwritten_hellos_until_written() -> None:
    pending = PendingWrites(100)
    pending.beat("a", "phone", T0, hello=True)
    pending.beat("b", "phone", T0 + 1, hello=True)
    pending.close("b", "phone", T0 + 9)
    answer = {"a": UserPresence(OFFLINE, None), "b": UserPresence(OFFLINE, T0 - 100), "c": UserPresence(OFFLINE, None)}
    pending.overlay(answer)
    assert answer == {"a": UserPresence(ONLINE, T0), "b": UserPresence(OFFLINE, T0 + 9), "c": UserPresence(OFFLINE, None)}
    pending.written(pending.take(100))
    written = {"a": UserPresence(OFFLINE, None)}  # what a store that lost it would say
    pending.overlay(written)
    assert written == {"a": UserPresence(OFFLINE, None)}
