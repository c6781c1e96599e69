"""chat/sequencer.py: per-channel hand-off in ID order as stores complete."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import pytest

from chat.sequencer import Sequencer


class Relay:
    def __init__(self) -> None:
        self.handed: list[tuple[int, bytes]] = []

    def hand_off(self, channel: int, payload: bytes) -> Awaitable[None] | None:
        self.handed.append((channel, payload))
        return None


async def test_stores_finishing_out_of_order_are_handed_off_in_id_order() -> None:
    relay = Relay()
    seq = Sequencer(relay.hand_off)
    a, b, c = (seq.join(1, i) for i in (10, 11, 12))
    seq.ready(c, b"c")
    seq.ready(b, b"b")
    assert relay.handed == []  # 10's store is not done: nothing may overtake it
    assert seq.tail(1) is c.handed and not c.handed.done()
    seq.ready(a, b"a")  # one call hands off the whole ready run
    assert relay.handed == [(1, b"a"), (1, b"b"), (1, b"c")]
    assert all(s.handed.done() for s in (a, b, c)) and seq.tail(1) is None


async def test_a_failed_store_is_skipped_and_channels_are_independent() -> None:
    relay = Relay()
    seq = Sequencer(relay.hand_off)
    a, b = seq.join(1, 10), seq.join(1, 11)
    other = seq.join(2, 12)
    seq.ready(other, b"other")  # another channel does not wait for channel 1
    seq.ready(b, b"b")
    seq.ready(a, None)  # its store failed: nothing to publish, the queue moves on
    seq.ready(a, b"late")  # settled slots ignore later calls (the sender's finally)
    assert relay.handed == [(2, b"other"), (1, b"b")]
    assert await seq.handed(a, 1) is None


async def test_a_stuck_predecessor_delays_a_message_only_up_to_the_bound(caplog: pytest.LogCaptureFixture) -> None:
    relay = Relay()
    seq = Sequencer(relay.hand_off)
    stuck, waiting = seq.join(1, 10), seq.join(1, 11)
    seq.ready(waiting, b"w")
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(seq.handed(waiting, 0.05), 2)
    assert relay.handed == [(1, b"w")] and "out of order" in caplog.text
    seq.ready(stuck, b"s")  # when the stuck one finishes it still goes out, once; w is not re-sent
    assert relay.handed == [(1, b"w"), (1, b"s")]
    assert seq.tail(1) is None
