"""Delivery of a hot room's `messages` batch frames: whole when the stream is live, one by one
through the seam's rules while it is not, bounded like any live message."""

from __future__ import annotations

import orjson

from chat.hot.coalescer import Batch, batch_frame
from chat.protocol import BatchFrame
from tests.unit.test_delivery import CH, core, drain, ids, msg, subscribe_live


def batch(*message_ids: int) -> BatchFrame:
    payloads = [orjson.dumps(orjson.loads(msg(i).data)["message"]) for i in message_ids]
    return BatchFrame(batch_frame(Batch(CH, list(message_ids), payloads)), list(message_ids), payloads)


def flat(frames: list[dict[str, object]]) -> list[int | str]:
    """Message IDs in order, a batch's expanded, with "batch" before each batch's."""
    out: list[int | str] = []
    for f in frames:
        if f["op"] == "messages":
            assert f["channel"] == str(CH)
            out += ["batch", *(int(m["id"]) for m in f["messages"])]  # type: ignore[attr-defined]
        else:
            out += ids([f])
    return out


def test_a_batch_splits_into_the_very_frames_its_messages_had() -> None:
    assert [f.data for f in batch(1, 2).singles()] == [msg(1).data, msg(2).data]


def test_a_live_stream_gets_the_batch_as_one_frame_and_remembers_its_range() -> None:
    d = core()
    subscribe_live(d)
    assert d.live(CH, 3, batch(1, 2, 3))
    assert d.frames == 1
    assert flat(drain(d)) == ["batch", 1, 2, 3]
    assert d.streams[CH].lo == 1 and d.streams[CH].hi == 3
    assert not d.replayed(CH, 2, msg(2))  # a later replay skips what the batch delivered


def test_a_stream_in_its_seam_takes_the_batch_one_by_one_and_drops_what_the_replay_sent() -> None:
    d = core()
    d.open(CH)
    d.live(CH, 6, batch(4, 5, 6))  # arrives while the store is replayed
    for i in (3, 4):
        d.replayed(CH, i, msg(i))
    d.finish(CH, after=2, upper=None, last=4, complete=True)
    assert flat(drain(d)) == [3, 4, 5, 6]  # 4 once, no batch frame in the seam
    assert d.live(CH, 8, batch(4, 7, 8))  # a late copy of replayed 4 inside a later batch: dropped
    assert flat(drain(d)) == [7, 8]


def test_a_batch_that_does_not_fit_is_a_gap_paid_with_one_resync() -> None:
    d = core(max_frames=2)
    subscribe_live(d)
    d.live(CH, 1, msg(1))
    d.live(CH, 2, msg(2))
    assert not d.live(CH, 4, batch(3, 4))  # the outbox is full: dropped for the channel
    assert not d.live(CH, 6, batch(5, 6))  # paused until the resync is queued
    assert flat(drain(d)) == [1, 2, "resync"]
    assert d.live(CH, 8, batch(7, 8))
    assert flat(drain(d)) == ["batch", 7, 8]
