"""The shared flusher: one write per marked socket per run; only a busy run (a room's fan-out)
makes the next run wait for the window, so acks and small fan-outs are written at once."""

from __future__ import annotations

import asyncio

from chat.flusher import Flusher

WINDOW_S = 60.0  # far longer than the test: a held run simply never happens within it


class Counted:
    def __init__(self) -> None:
        self.writes = 0

    def write_now(self) -> None:
        self.writes += 1


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_every_marked_socket_is_written_once_per_run() -> None:
    flusher = Flusher(window_s=WINDOW_S, busy_sockets=4)
    a, b = Counted(), Counted()
    flusher.mark(a)
    flusher.mark(b)
    await turns()
    assert (a.writes, b.writes) == (1, 1)


async def test_small_runs_never_hold_the_next_one() -> None:
    flusher = Flusher(window_s=WINDOW_S, busy_sockets=4)
    sockets = [Counted() for _ in range(3)]  # an ack and a small group's fan-out
    for _ in range(5):
        for s in sockets:
            flusher.mark(s)
        await turns()
    assert [s.writes for s in sockets] == [5, 5, 5]


async def test_a_busy_run_holds_the_next_one_for_the_window() -> None:
    flusher = Flusher(window_s=WINDOW_S, busy_sockets=4)
    room = [Counted() for _ in range(4)]
    for s in room:
        flusher.mark(s)
    await turns()
    assert all(s.writes == 1 for s in room)
    for s in room:  # the room's next message, right behind
        flusher.mark(s)
    await turns()
    assert all(s.writes == 1 for s in room), "written within the window of a busy run"


class Broken(Counted):
    def write_now(self) -> None:
        super().write_now()
        raise RuntimeError("a bug in one socket's write")


async def test_a_socket_that_raises_does_not_strand_the_others_of_its_run() -> None:
    flusher = Flusher(window_s=WINDOW_S, busy_sockets=4)
    broken, after = Broken(), Counted()
    flusher.mark(broken)
    flusher.mark(after)
    await turns()
    assert (broken.writes, after.writes) == (1, 1)
