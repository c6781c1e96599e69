"""Coalesced live fan-out with scripted clocks: windows, bounds, the batch frame — and that
every message comes out once, in ID order."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat import protocol
from chat.hot.coalescer import Batch, Coalescer, CoalescerConfig, batch_frame, message_object


def test_a_window_gathers_a_rooms_messages_in_id_order() -> None:
    c = Coalescer(CoalescerConfig(window_s=0.03))
    assert c.due(0) == ([], None)
    assert c.add(7, 12, b"12", 0.0) == []
    assert c.add(7, 11, b"11", 0.01) == []  # another node's, a little late: sorted into place
    assert c.add(7, 12, b"12", 0.02) == []  # a repeat: kept once
    assert c.add(8, 5, b"5", 0.02) == []
    assert c.due(0.029) == ([], pytest.approx(0.03))
    assert c.due(0.03) == ([Batch(7, [11, 12], [b"11", b"12"])], pytest.approx(0.05))
    assert c.due(0.05) == ([Batch(8, [5], [b"5"])], None)


def test_bounds_flush_at_once_and_too_many_rooms_pass_through() -> None:
    c = Coalescer(CoalescerConfig(max_messages=3, max_bytes=10, max_rooms=1))
    assert c.add(1, 1, b"a", 0) == [] and c.add(1, 2, b"b", 0) == []
    assert c.add(1, 3, b"c", 0) == [Batch(1, [1, 2, 3], [b"a", b"b", b"c"])]
    assert c.add(1, 4, b"0123456789", 0) == [Batch(1, [4], [b"0123456789"])]  # 10 bytes
    c.add(1, 5, b"x", 0)
    assert c.add(2, 9, b"y", 0) == [Batch(2, [9], [b"y"])]  # room 1 holds the only open batch
    assert c.flush(2) == [] and c.flush(1) == [Batch(1, [5], [b"x"])]
    c.add(1, 6, b"z", 0)
    assert c.flush() == [Batch(1, [6], [b"z"])] and c.due(1) == ([], None)
    with pytest.raises(ValueError):
        CoalescerConfig(max_messages=0)


def test_the_batch_frame_carries_the_messages_as_encoded() -> None:
    messages = [{"id": str(i), "channel": "7", "sender": "ann", "text": f"hi \u00e9 \"{i}\"", "ts": 1} for i in (3, 4)]
    frames = [protocol.encode("message", {"message": m}) for m in messages]
    payloads = [message_object(f) for f in frames]
    assert [orjson.loads(p) for p in payloads] == messages
    assert message_object(b'{"message": {"id": "3"}, "op": "message"}') == b'{"id":"3"}'  # another layout
    frame = batch_frame(Batch(7, [3, 4], payloads))
    expected = orjson.loads(protocol.encode("messages", {"channel": "7", "messages": messages}))
    assert orjson.loads(frame) == expected


@settings(max_examples=150, deadline=None)
@given(
    adds=st.lists(st.tuples(st.sampled_from([1, 2, 3]), st.floats(0, 0.02)), min_size=1, max_size=300),
    window=st.floats(0, 0.05),
    max_messages=st.integers(1, 20),
)
def test_every_message_comes_out_once_in_order(adds: list[tuple[int, float]], window: float, max_messages: int) -> None:
    """Per room, messages added in ID order (one node's relay order) come out as batches whose
    concatenation is exactly what went in; no message waits past its batch's window."""
    c = Coalescer(CoalescerConfig(window_s=window, max_messages=max_messages, max_rooms=2))
    now, deadline = 0.0, None
    added_at: dict[int, float] = {}
    sent: dict[int, list[int]] = {1: [], 2: [], 3: []}
    got: dict[int, list[int]] = {1: [], 2: [], 3: []}

    def take(batches: list[Batch], at: float) -> None:
        for batch in batches:
            assert batch.ids == sorted(batch.ids) and len(batch.ids) == len(batch.payloads)
            assert at <= min(added_at[i] for i in batch.ids) + window + 1e-9
            got[batch.room] += batch.ids

    for i, (room, step) in enumerate(adds):
        while deadline is not None and deadline <= now + step:  # the hub's timer fires at its deadline
            batches, next_deadline = c.due(deadline)
            take(batches, deadline)
            deadline = next_deadline
        now += step
        sent[room].append(i)
        added_at[i] = now
        take(c.add(room, i, str(i).encode(), now), now)
        batches, deadline = c.due(now)  # the hub re-arms its timer
        take(batches, now)
    take(c.flush(), now)
    assert got == sent
