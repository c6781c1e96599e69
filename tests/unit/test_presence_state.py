"""presence.state: transitions as pure functions of device events and ``now`` (no sleeping)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from presence.state import (
    CLOSE,
    OFFLINE,
    ONLINE,
    DeviceEvent,
    PresenceState,
    Transition,
    UserPresence,
)
from tests.support.presence import T0

T = 30_000  # timeout_ms


def state() -> PresenceState:
    return PresenceState(T, retention_ms=10 * T)


def test_hello_brings_the_user_online_once() -> None:
    s = state()
    assert s.heartbeat("alice", "phone", T0) == Transition("alice", ONLINE, T0)
    assert s.heartbeat("alice", "phone", T0 + 5000) is None
    assert s.heartbeat("alice", "laptop", T0 + 6000) is None
    # Online since T0: plain heartbeats and more devices do not move last_seen.
    assert s.presence("alice") == UserPresence(ONLINE, T0)


def test_never_seen_user_is_offline_without_last_seen() -> None:
    assert state().presence("nobody") == UserPresence(OFFLINE, None)


def test_stays_online_across_a_drop_shorter_than_the_timeout() -> None:
    s = state()
    s.heartbeat("alice", "phone", T0)
    assert s.expire(T0 + T, 100).transitions == []  # exactly at the deadline: still live
    assert s.presence("alice").status == ONLINE
    assert s.heartbeat("alice", "phone", T0 + T) is None  # back in time: no flap
    assert s.expire(T0 + T + 1, 100).transitions == []


def test_abrupt_drop_goes_offline_after_the_timeout_with_the_last_heartbeat_as_last_seen() -> None:
    s = state()
    s.heartbeat("alice", "phone", T0)
    s.heartbeat("alice", "phone", T0 + 5000)
    # Past the deadline but not swept: still recorded, so still online for everyone.
    assert s.presence("alice") == UserPresence(ONLINE, T0)
    expiry = s.expire(T0 + 5000 + T + 1, 100)
    assert expiry.transitions == [Transition("alice", OFFLINE, T0 + 5000)] and not expiry.more
    assert s.presence("alice") == UserPresence(OFFLINE, T0 + 5000)


def test_clean_close_is_offline_at_once() -> None:
    s = state()
    s.heartbeat("alice", "phone", T0)
    assert s.close("alice", "phone", T0 + 700) == Transition("alice", OFFLINE, T0 + 700)
    assert s.presence("alice") == UserPresence(OFFLINE, T0 + 700)
    assert s.close("alice", "phone", T0 + 800) is None  # twice: nothing more
    assert s.close("bob", "phone", T0) is None  # unknown: nothing
    assert s.presence("bob") == UserPresence(OFFLINE, None)


def test_two_devices_offline_only_after_both() -> None:
    s = state()
    s.heartbeat("alice", "phone", T0)
    s.heartbeat("alice", "laptop", T0 + 1000)
    assert s.close("alice", "laptop", T0 + 2000) is None
    assert s.presence("alice") == UserPresence(ONLINE, T0 + 2000)
    # The phone dropped abruptly: offline after its own timeout; last_seen is the later close.
    assert s.expire(T0 + T + 1, 100).transitions == [Transition("alice", OFFLINE, T0 + 2000)]


def test_a_device_that_heartbeats_again_is_not_expired() -> None:
    s = state()
    s.heartbeat("alice", "phone", T0)
    s.heartbeat("alice", "phone", T0 + 20_000)
    assert s.expire(T0 + T + 1, 100).transitions == []
    assert s.expire(T0 + 20_000 + T + 1, 100).transitions == [Transition("alice", OFFLINE, T0 + 20_000)]


def test_clock_stepping_back_never_moves_time_backwards() -> None:
    s = state()
    s.heartbeat("alice", "phone", T0 + 10_000)
    assert s.heartbeat("alice", "phone", T0) is None
    assert s.devices("alice") == {"phone": T0 + 10_000}
    assert s.presence("alice") == UserPresence(ONLINE, T0 + 10_000)
    # The device's deadline is still that of its latest heartbeat.
    assert s.expire(T0 + T + 1, 100).transitions == []
    # A close stamped earlier than the last heartbeat keeps the later time too.
    assert s.close("alice", "phone", T0 + 1) == Transition("alice", OFFLINE, T0 + 10_000)


def test_clock_jumping_forward_expires_stale_devices_at_the_next_sweep() -> None:
    s = state()
    s.heartbeat("alice", "phone", T0)
    s.heartbeat("bob", "phone", T0)
    jumped = T0 + 3600_000
    s.heartbeat("bob", "phone", jumped)  # bob heartbeats after the jump
    assert s.expire(jumped, 100).transitions == [Transition("alice", OFFLINE, T0)]
    assert s.presence("bob").status == ONLINE


def test_expire_is_bounded_and_says_when_more_are_due() -> None:
    s = state()
    for i in range(5):
        s.heartbeat(f"u{i}", "d", T0 + i)
    first = s.expire(T0 + 10 * T, 2)
    assert [t.user for t in first.transitions] == ["u0", "u1"] and first.more
    second = s.expire(T0 + 10 * T, 10)
    assert [t.user for t in second.transitions] == ["u2", "u3", "u4"] and not second.more


def test_apply_runs_events_in_order() -> None:
    s = state()
    got = s.apply(
        [
            DeviceEvent("a", "1", T0),
            DeviceEvent("b", "1", T0),
            DeviceEvent("a", "1", T0 + 5, CLOSE),
            DeviceEvent("a", "2", T0 + 6),
        ]
    )
    assert got == [
        Transition("a", ONLINE, T0),
        Transition("b", ONLINE, T0),
        Transition("a", OFFLINE, T0 + 5),
        Transition("a", ONLINE, T0 + 6),
    ]


def test_online_among_counts_all_and_lists_up_to_the_limit_in_order() -> None:
    s = state()
    for user in ("c", "a", "b"):
        s.heartbeat(user, "d", T0)
    s.heartbeat("gone", "d", T0 - 2 * T)
    s.expire(T0, 100)
    sample = s.online_among(["a", "x", "b", "gone", "c", "a"], 2)
    assert (sample.count, sample.users) == (3, ["a", "b"])
    assert sample.to_wire() == {"online": 3, "users": ["a", "b"]}


def test_last_seen_is_forgotten_after_the_retention() -> None:
    s = PresenceState(T, retention_ms=2 * T)
    s.heartbeat("alice", "phone", T0)
    s.close("alice", "phone", T0)
    s.expire(T0 + 2 * T, 10)
    assert s.presence("alice") == UserPresence(OFFLINE, T0)
    s.expire(T0 + 2 * T + 1, 10)
    assert s.presence("alice") == UserPresence(OFFLINE, None)


def test_wire_forms() -> None:
    assert Transition("a", OFFLINE, 5).to_wire() == {"user": "a", "status": "offline", "last_seen": 5}
    assert UserPresence(OFFLINE, None).to_wire() == {"status": "offline", "last_seen": None}


# Properties


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(1, T // 2), min_size=1, max_size=60),
    sweep_offsets=st.lists(st.integers(0, T // 2), min_size=1, max_size=60),
)
def test_a_device_heartbeating_every_half_timeout_never_goes_offline(gaps: list[int], sweep_offsets: list[int]) -> None:
    s = state()
    now = T0
    changes = [s.heartbeat("alice", "phone", now)]
    for gap, offset in zip(gaps, sweep_offsets * len(gaps), strict=False):
        # A sweep anywhere between two heartbeats (the next one is at most T/2 away).
        changes += s.expire(now + min(offset, gap), 1000).transitions
        now += gap
        changes.append(s.heartbeat("alice", "phone", now))
    assert [c for c in changes if c is not None] == [Transition("alice", ONLINE, T0)]
    assert s.presence("alice").status == ONLINE


# One step of two devices of one user: (which device, what, how many ms later)
_steps = st.lists(
    st.tuples(st.sampled_from(["phone", "laptop"]), st.sampled_from(["beat", "close", "sweep"]), st.integers(0, 2 * T)),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(steps=_steps)
def test_two_devices_transitions_follow_the_set_of_recorded_devices(steps: list[tuple[str, str, int]]) -> None:
    s = state()
    now = T0
    model: dict[str, int] = {}  # device → last heartbeat (the reference)
    seen: int | None = None
    for device, what, later in steps:
        now += later
        online_before = bool(model)
        if what == "beat":
            got = [s.heartbeat("alice", device, now)]
            if not model:  # only coming online moves last_seen, not plain heartbeats
                seen = max(seen or now, now)
            model[device] = max(model.get(device, now), now)
        elif what == "close":
            got = [s.close("alice", device, now)]
            if device in model:
                seen = max(seen or now, now, model.pop(device))
        else:
            got = list(s.expire(now, 1000).transitions)
            for d, last in list(model.items()):
                if last + T < now:
                    seen = max(seen or last, last)
                    del model[d]
        got = [g for g in got if g is not None]
        if online_before == bool(model):
            assert got == []
        else:
            assert seen is not None
            assert got == [Transition("alice", ONLINE if model else OFFLINE, seen)]
        assert s.devices("alice") == model


@settings(max_examples=200, deadline=None)
@given(
    last_gap=st.integers(0, T),
    close_cleanly=st.booleans(),
    later=st.integers(1, 3 * T),
)
def test_clean_close_is_immediate_and_abrupt_drop_waits_for_the_timeout(last_gap: int, close_cleanly: bool, later: int) -> None:
    s = state()
    s.heartbeat("alice", "phone", T0)
    last = T0 + last_gap
    s.heartbeat("alice", "phone", last)
    if close_cleanly:
        assert s.close("alice", "phone", last + 1) == Transition("alice", OFFLINE, last + 1)
        assert s.expire(last + later, 1000).transitions == []
    else:
        got = s.expire(last + later, 1000).transitions
        if later > T:
            assert got == [Transition("alice", OFFLINE, last)]
        else:
            assert got == [] and s.presence("alice").status == ONLINE
