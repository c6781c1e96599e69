"""What hot-room protection costs a room that is not hot, in process (``bench.hot_room --micro``).

* ``send``: ``MessageService.send`` to a quiet room — membership cached, an in-memory store that
  answers at once, the in-process relay — with no guard (as before issue 9) and with the node's
  :class:`~chat.protect.guard.Protection` (counting, limits checked, a storage lane taken; the
  lanes' budget raised out of the way: this loop sends far faster than its 5,000/s default).
* ``fanout``: the hub delivering one relayed message of a quiet room to 10 subscribed sockets (that
  only count it), without a fan-out policy and with Protection's (counting the fan-out).

Each figure is the median of ``ROUNDS`` rounds of ``N`` operations, in microseconds per operation,
on one event loop; the difference is what protection adds per message of a quiet room.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from chat import commands, dynamic, events, protocol
from chat.access import Access
from chat.guards import NO_GUARD
from chat.hub import Hub
from chat.ids import timestamp_ms
from chat.minter import FixedWorker, IdMinter
from chat.models import Message, Page, Principal
from chat.protect.guard import Protection
from chat.relay.local import LocalRelay
from chat.service import MessageLimits, MessageService
from chat.waiting.memory import MemoryWaitingRooms

ROUNDS, N = 15, 2000
ROOM = 4242


class MemoryStore:
    """Just enough of a MessageStore for the send path, answering at once."""

    async def is_member(self, channel_id: int, user: str) -> bool:
        return True

    async def insert_message(self, message: Message) -> tuple[Message, bool]:
        return message, True

    async def insert_messages(self, messages: Sequence[Message]) -> list[tuple[Message, bool]]:
        return [(m, True) for m in messages]

    async def history(self, channel_id: int, *, before: int | None = None, after: int | None = None, limit: int = 50) -> Page:
        return Page([], False)


class Counting:
    """A subscriber that only counts what it is given."""

    def __init__(self, i: int) -> None:
        self.user, self.session_id, self.got = f"u{i}", f"s{i}", 0

    def deliver_message(self, channel: int, message_id: int, frame: Any) -> None:
        self.got += 1


async def _service(guarded: bool) -> MessageService:
    store, relay = MemoryStore(), LocalRelay()
    protection = Protection(node_id="m", store=store, relay=relay, lines=MemoryWaitingRooms(), guard_store=False, guard_relay=False)  # type: ignore[arg-type]
    # The storage budget is a cap (5,000 writes/s by default), not a cost: this loop sends faster.
    protection.apply({**dynamic.SCHEMA.defaults(), "lane_budget_per_s": 1e7})
    hub = Hub(relay, policy=protection.fanout if guarded else NO_GUARD)
    await hub.start()
    return MessageService(
        store=store,  # type: ignore[arg-type]
        relay=relay,
        minter=IdMinter(FixedWorker(1)),
        access=Access(store),  # type: ignore[arg-type]
        limits=MessageLimits(),
        guard=protection if guarded else NO_GUARD,
    )


async def _send_us() -> tuple[float, float]:
    """(unguarded, protected) µs per send, their rounds interleaved so that load from elsewhere
    on the machine falls on both alike."""
    services = {False: await _service(False), True: await _service(True)}
    ann, rounds = Principal("ann"), {False: [], True: []}  # type: ignore[var-annotated]
    for r in range(ROUNDS):
        for guarded, service in services.items():
            t0 = time.perf_counter()
            for i in range(N):
                await service.send(ann, commands.Send(None, ROOM, "hello there", f"{guarded}-{r}-{i}"))
            rounds[guarded].append((time.perf_counter() - t0) / N * 1e6)
    for service in services.values():
        await service.close()
    return statistics.median(rounds[False]), statistics.median(rounds[True])


async def _fanout_us(guarded: bool) -> float:
    relay = LocalRelay()
    protection = Protection(node_id="m", store=MemoryStore(), relay=relay, lines=MemoryWaitingRooms(), guard_store=False, guard_relay=False)  # type: ignore[arg-type]
    hub = Hub(relay, policy=protection.fanout if guarded else NO_GUARD)
    await hub.start()
    for i in range(10):
        await hub.join_channel(ROOM, Counting(i))  # type: ignore[arg-type]
    payloads = []
    for i in range(N):
        mid = (1 << 40) + i
        frame = protocol.encode("message", {"message": Message(mid, ROOM, "ann", "hello", timestamp_ms(mid), f"k{i}").to_wire()})
        payloads.append(events.pack(events.MESSAGE, ROOM, mid, "-", frame))
    topic, rounds = f"c:{ROOM}", []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for payload in payloads:
            hub._deliver(topic, payload)
        rounds.append((time.perf_counter() - t0) / N * 1e6)
    return statistics.median(rounds)


def micro() -> dict[str, Any]:
    """µs per operation of a quiet room with and without protection (see the module docstring)."""

    async def run() -> dict[str, float]:
        unguarded, protected = await _send_us()
        out = {"send_unguarded": round(unguarded, 2), "send_protected": round(protected, 2)}
        out["fanout_10_sockets_unguarded"] = round(await _fanout_us(False), 2)
        out["fanout_10_sockets_protected"] = round(await _fanout_us(True), 2)
        return out

    figures = asyncio.run(run())
    added = {k.removesuffix("_protected"): round(v - figures[k.replace("_protected", "_unguarded")], 2) for k, v in figures.items() if k.endswith("_protected")}
    return {"rounds": ROUNDS, "operations_per_round": N, "us_per_op": figures, "us_added_per_op": added}
