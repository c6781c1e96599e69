"""The per-socket delivery core with scripted events: the replay/live seam, bounds and resync,
gaps, kicks and the replay cap — no sockets, no event loop."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from chat import protocol
from chat.delivery import Delivery
from chat.protocol import Frame

CH = 7


def msg(message_id: int, size: int = 0) -> Frame:
    return protocol.frame("message", {"message": {"id": str(message_id), "channel": str(CH), "pad": "x" * size}})


def core(max_frames: int = 1000, max_bytes: int = 1 << 20) -> Delivery:
    return Delivery(max_frames=max_frames, max_bytes=max_bytes, resync_frame=protocol.resync)


def drain(d: Delivery) -> list[dict[str, object]]:
    """What the writer takes and writes, decoded."""
    out = []
    while frames := d.take():
        d.written(len(frames), sum(len(f) for f in frames))
        out.extend(orjson.loads(f.data) for f in frames)
    return out


def ids(frames: list[dict[str, object]]) -> list[int | str]:
    """Message IDs in order, with "resync" where one was sent."""
    out: list[int | str] = []
    for f in frames:
        if f["op"] == "message":
            out.append(int(f["message"]["id"]))  # type: ignore[index]
        elif f["op"] == "resync":
            out.append("resync")
    return out


def subscribe_live(d: Delivery) -> None:
    assert d.open(CH)
    d.finish(CH, after=None, upper=None, last=None, complete=True)


# The seam


def test_live_messages_during_a_replay_wait_and_duplicates_are_dropped() -> None:
    d = core()
    d.open(CH)
    d.live(CH, 5, msg(5))  # published while replaying: held back
    d.live(CH, 6, msg(6))
    for i in (3, 4, 5):  # the store already has 5 (cluster: no bound)
        d.replayed(CH, i, msg(i))
    d.finish(CH, after=2, upper=None, last=5, complete=True)
    d.live(CH, 7, msg(7))
    assert ids(drain(d)) == [3, 4, 5, 6, 7]


def test_a_bound_drops_held_back_messages_the_replay_covered() -> None:
    d = core()
    d.open(CH)
    d.live(CH, 4, msg(4))  # minted before the bound, delivered late: the replay has it
    d.live(CH, 9, msg(9))
    for i in (3, 4):
        d.replayed(CH, i, msg(i))
    d.finish(CH, after=2, upper=8, last=4, complete=True)
    assert ids(drain(d)) == [3, 4, 9]


def test_a_resubscribe_does_not_send_what_the_socket_already_got() -> None:
    d = core()
    d.open(CH)
    for i in (1, 2, 3):
        d.replayed(CH, i, msg(i))
    d.finish(CH, after=0, upper=3, last=3, complete=True)
    d.live(CH, 4, msg(4))
    assert ids(drain(d)) == [1, 2, 3, 4]
    assert not d.open(CH)  # already subscribed: the same stream
    for i in (2, 3, 4):
        assert not d.replayed(CH, i, msg(i))
    d.finish(CH, after=1, upper=4, last=4, complete=True)
    assert drain(d) == []


def test_a_replay_stopped_at_its_cap_owes_a_resync_after_it() -> None:
    d = core()
    d.open(CH)
    d.live(CH, 50, msg(50))
    for i in (1, 2):
        d.replayed(CH, i, msg(i))
    d.finish(CH, after=0, upper=None, last=2, complete=False)
    assert ids(drain(d)) == [1, 2, "resync"]
    d.live(CH, 51, msg(51))  # live again after the resync
    assert ids(drain(d)) == [51]


def test_a_failed_replay_owes_a_resync() -> None:
    d = core()
    d.open(CH)
    d.replayed(CH, 1, msg(1))
    d.finish(CH, after=0, upper=None, last=1, complete=False)
    assert ids(drain(d)) == [1, "resync"]


# Bounds, overflow, resync


def test_overflow_drops_live_messages_for_the_channel_then_resyncs_at_half() -> None:
    d = core(max_frames=4)
    subscribe_live(d)
    for i in range(1, 8):
        d.live(CH, i, msg(i))  # 1-4 fit, 5-7 are dropped: a gap
    assert d.owed == {CH}
    frames = d.take()
    assert len(frames) == 4
    d.written(1, len(frames[0]))  # 3 still in flight: above half, no resync yet
    assert d.take() == []
    d.live(CH, 8, msg(8))  # paused until the resync
    d.written(3, sum(len(f) for f in frames[1:]))
    assert ids(drain(d)) == ["resync"]
    d.live(CH, 9, msg(9))
    assert ids(drain(d)) == [9]


def test_the_byte_bound_counts_too() -> None:
    d = core(max_frames=1000, max_bytes=10_000)
    subscribe_live(d)
    assert d.live(CH, 1, msg(1, size=6000))
    assert not d.live(CH, 2, msg(2, size=6000))  # 12 kB would cross 10 kB
    assert ids(drain(d)) == [1, "resync"]


def test_control_frames_are_never_dropped_but_a_client_that_never_reads_is_cut_off() -> None:
    d = core(max_frames=4)
    subscribe_live(d)
    for i in range(10):
        d.live(CH, i + 1, msg(i + 1))
    accepted = 0
    while d.control(protocol.reply("ack", accepted)):
        accepted += 1
    assert accepted == d.hard_frames - 4  # every ack up to the hard bound was kept
    assert d.closed


def test_a_relay_gap_owes_a_resync_and_pauses_live_delivery_until_it_is_sent() -> None:
    d = core()
    subscribe_live(d)
    d.live(CH, 1, msg(1))
    assert d.gap(CH)  # room now: the resync is queued at once
    d.live(CH, 2, msg(2))
    assert ids(drain(d)) == [1, "resync", 2]


def test_a_gap_during_a_replay_is_settled_when_the_replay_ends() -> None:
    d = core()
    d.open(CH)
    d.replayed(CH, 1, msg(1))
    assert not d.gap(CH)  # the running subscribe settles it
    d.live(CH, 3, msg(3))  # dropped: the channel is gapped
    d.finish(CH, after=0, upper=None, last=1, complete=True)
    assert ids(drain(d)) == [1, "resync"]


def test_typing_is_dropped_when_there_is_no_room() -> None:
    d = core(max_frames=2)
    subscribe_live(d)
    typing = protocol.frame("typing", {"channel": str(CH), "user": "bob"})
    assert d.ephemeral(CH, typing)
    d.live(CH, 1, msg(1))
    assert not d.ephemeral(CH, typing)
    assert [f["op"] for f in drain(d)] == ["typing", "message"]


# Kicks and unsubscribes


def test_a_kick_ends_the_stream_with_its_frame() -> None:
    d = core()
    subscribe_live(d)
    kicked = protocol.frame("unsubscribed", {"channels": [str(CH)], "reason": "removed"})
    assert d.kick(CH, kicked)
    assert not d.kick(CH, kicked)
    d.live(CH, 1, msg(1))
    assert [f["op"] for f in drain(d)] == ["unsubscribed"]


def test_an_unsubscribe_forgets_an_owed_resync() -> None:
    d = core(max_frames=1)
    subscribe_live(d)
    d.live(CH, 1, msg(1))
    d.live(CH, 2, msg(2))  # a gap
    assert d.close_stream(CH)
    assert ids(drain(d)) == [1]


# Property: any interleaving of replay and live traffic at the seam


@settings(max_examples=300, deadline=None)
@given(
    stored_before=st.integers(min_value=0, max_value=20),
    since=st.integers(min_value=0, max_value=20),
    live_after=st.integers(min_value=0, max_value=20),
    steps=st.lists(st.booleans(), max_size=60),
    max_frames=st.sampled_from([3, 8, 1000]),
)
def test_single_node_seam_is_gap_free_in_order_or_says_resync(
    stored_before: int, since: int, live_after: int, steps: list[bool], max_frames: int
) -> None:
    """Messages 1..stored_before exist when the subscribe starts (the bound); later ones arrive
    live while the replay runs, in any interleaving; the writer drains at random moments.
    Without a resync the socket gets exactly since+1..end, once each, in ID order; with one,
    nothing is duplicated and order holds up to it."""
    since = min(since, stored_before)
    upper = stored_before
    d = core(max_frames=max_frames)
    d.open(CH)
    out: list[dict[str, object]] = []
    replay = iter(range(since + 1, upper + 1))
    live = iter(range(upper + 1, upper + live_after + 1))
    last = None
    for step in steps:
        if step:
            message_id = next(replay, None)
            if message_id is None:
                continue
            if not d.has_room():
                out += drain(d)  # the replay waits for room: the writer runs meanwhile
            d.replayed(CH, message_id, msg(message_id))
            last = message_id
        else:
            message_id = next(live, None)
            if message_id is not None:
                d.live(CH, message_id, msg(message_id))
            else:
                out += drain(d)
    for message_id in replay:
        if not d.has_room():
            out += drain(d)
        d.replayed(CH, message_id, msg(message_id))
        last = message_id
    d.finish(CH, after=since, upper=upper, last=last, complete=True)
    for message_id in live:
        d.live(CH, message_id, msg(message_id))
        out += drain(d)
    out += drain(d)
    got = ids(out)
    end = upper + live_after
    if "resync" not in got:
        assert got == list(range(since + 1, end + 1))
    else:
        before_resync = got[: got.index("resync")]
        assert before_resync == sorted(set(before_resync))
        messages = [i for i in got if i != "resync"]
        assert len(messages) == len(set(messages))


@settings(max_examples=300, deadline=None)
@given(
    pre=st.integers(min_value=0, max_value=25),
    read_upto=st.integers(min_value=0, max_value=25),
    published=st.integers(min_value=0, max_value=25),
    since=st.integers(min_value=0, max_value=25),
    during=st.sets(st.integers(min_value=1, max_value=25)),
)
def test_cluster_seam_without_a_bound_has_no_duplicate_and_no_gap(pre: int, read_upto: int, published: int, since: int, during: set[int]) -> None:
    """Shared relay, no bound. Messages 1..pre were published before the socket joined (no live
    copy; the client's ``since`` is among them: it saw it); the replay reads what is stored,
    1..read_upto; every later message arrives live
    exactly once, during the replay (``during``) or after it — possibly after the replay
    already read it from the store (another node stores, then publishes a moment later)."""
    read_upto = max(read_upto, pre)
    published = max(published, read_upto)
    since = min(since, pre)
    d = core()
    d.open(CH)
    live = range(pre + 1, published + 1)
    for message_id in live:
        if message_id in during:
            d.live(CH, message_id, msg(message_id))
    last = None
    for message_id in range(since + 1, read_upto + 1):
        d.replayed(CH, message_id, msg(message_id))
        last = message_id
    d.finish(CH, after=since, upper=None, last=last, complete=True)
    for message_id in live:
        if message_id not in during:
            d.live(CH, message_id, msg(message_id))
    got = ids(drain(d))
    assert "resync" not in got
    assert sorted(got) == list(range(since + 1, published + 1))
    assert len(got) == len(set(got))
