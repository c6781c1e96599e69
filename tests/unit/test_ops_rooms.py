"""Hot rooms for operators (chat/ops_rooms.py, and their metrics): member and online counts
cached off the dashboard's path, rooms as the API shows them, the hot-room, queue and breaker
families (rooms counted, never labelled), and the adapter over the node's real protection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chat.metrics.collector import ChatCollector, Sources
from chat.metrics.counters import HttpCounters, MessageCounters, WireCounters
from chat.metrics.looplag import LoopLag
from chat.models import Channel, ChannelKind
from chat.ops_rooms import FACTS_ROOMS, FACTS_TTL_S, Facts, ProtectionOps, RoomFacts, room_wire
from chat.protect.guard import Protection
from chat.relay.local import LocalRelay
from chat.store.sqlite import SqliteMessageStore
from chat.waiting.memory import MemoryWaitingRooms
from discovery.registry.base import RegistryView
from presence.tracker import TrackerStats


@dataclass(frozen=True)
class View:
    channel: int
    send_per_s: float = 0.0
    fanout_per_s: float = 0.0
    fetch_per_s: float = 0.0
    join_per_s: float = 0.0
    hot: bool = False
    hot_since_ms: int | None = None
    pinned: bool | None = None
    throttled: bool = False


@dataclass
class FakeRooms:
    views: list[View]
    states: dict[str, str] = field(default_factory=dict)
    pins: list[tuple[int, bool | None]] = field(default_factory=list)

    def counters(self) -> dict[str, int]:
        return {"sends_throttled": 3, "rooms_heated": 1}

    def queues(self) -> dict[str, int]:
        return {"interactive": 0, "hot": 4, "bot": 1, "hot_batches": 7}

    def refusals(self) -> dict[str, int]:
        return {name: 2 for name in self.states}

    def snapshot(self) -> list[View]:
        return self.views

    async def pin(self, room: int, hot: bool | None) -> None:
        self.pins.append((room, hot))

    def health(self) -> dict[str, str]:
        return self.states


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def settle(facts: RoomFacts) -> None:
    task = facts._refreshing
    if task is not None:
        await task


async def test_counts_are_read_once_per_ttl_off_the_callers_path() -> None:
    calls: list[int] = []

    async def count_members(room: int) -> int:
        calls.append(room)
        return 250

    async def list_members(room: int, limit: int) -> list[str]:
        return [f"u{i}" for i in range(min(limit, 250))]

    async def count_online(users: list[str]) -> int:
        return len(users) // 5

    clock = Clock()
    facts = RoomFacts(count_members=count_members, list_members=list_members, count_online=count_online, clock=clock)
    facts.want([1, 2])
    assert facts.get(1) is None  # not waited for: the view shows null until the counts are in
    await settle(facts)
    assert facts.get(1) == Facts(members=250, online=50, sampled=False) and calls == [1, 2]
    facts.want([1, 2])
    await settle(facts)
    assert calls == [1, 2]  # fresh: not read again
    clock.now += FACTS_TTL_S
    facts.want([2])  # room 1 is no longer watched: forgotten
    await settle(facts)
    assert calls == [1, 2, 2] and facts.get(1) is None
    await facts.close()


async def test_a_room_whose_counts_fail_stays_unknown_and_the_others_go_on() -> None:
    async def count_members(room: int) -> int:
        if room == 1:
            raise RuntimeError("store down")
        return 10

    async def list_members(room: int, limit: int) -> list[str]:
        return ["a"]

    async def count_online(users: list[str]) -> int:
        await asyncio.sleep(0)
        return 1

    facts = RoomFacts(count_members=count_members, list_members=list_members, count_online=count_online)
    facts.want([1, 2])
    await settle(facts)
    assert facts.get(1) is None and facts.get(2) == Facts(10, 1, True)


async def test_only_the_hottest_rooms_get_counts() -> None:
    seen: list[int] = []

    async def count_members(room: int) -> int:
        seen.append(room)
        return 1

    async def list_members(room: int, limit: int) -> list[str]:
        return []

    async def count_online(users: list[str]) -> int:
        return 0

    facts = RoomFacts(count_members=count_members, list_members=list_members, count_online=count_online)
    facts.want(list(range(FACTS_ROOMS * 2)))
    await settle(facts)
    assert seen == list(range(FACTS_ROOMS))


def test_a_room_shows_its_rates_state_and_counts() -> None:
    view = View(channel=2**62 + 5, send_per_s=31.234, fetch_per_s=2, join_per_s=0.5, hot=True, hot_since_ms=1_800_000_000_000, pinned=True, throttled=True)
    assert room_wire(view, Facts(1200, 300, False)) == {
        "channel": str(2**62 + 5),  # IDs travel as strings: 64 bits do not fit a JSON number
        "send_per_s": 31.23,
        "fanout_per_s": 0.0,
        "fetch_per_s": 2,
        "join_per_s": 0.5,
        "members": 1200,
        "online": 300,
        "online_sampled": False,
        "throttled": True,
        "hot": True,
        "pinned": True,
        "hot_since": 1_800_000_000_000,
    }
    assert room_wire(view, None)["members"] is None


def collect(rooms: FakeRooms) -> dict[str, object]:
    sources = Sources(
        node_id="n",
        version="0.1.0",
        capacity=10,
        node=SimpleNamespace(sessions=set(), draining=False),  # type: ignore[arg-type]
        view=lambda: RegistryView((), 1),
        wire=WireCounters(),
        messages=MessageCounters(),
        gaps_owed=lambda: 0,
        gaps_announced=lambda: 0,
        http=HttpCounters(),
        presence=lambda: TrackerStats(0, 0, 0, 0, 0, 0),
        lag=LoopLag(),
        rooms=rooms,  # type: ignore[arg-type]
    )
    text = generate_latest(ChatCollector(sources)).decode()  # type: ignore[arg-type]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_hot_room_queue_and_breaker_families() -> None:
    rooms = FakeRooms([View(101, hot=True, pinned=True, throttled=True), View(102), View(103, pinned=False)], {"cassandra": "critical", "redis": "healthy"})
    samples = collect(rooms)
    assert samples[("chat_hot_rooms", (("state", "watched"),))] == 3
    assert samples[("chat_hot_rooms", (("state", "hot"),))] == 1
    assert samples[("chat_hot_rooms", (("state", "throttled"),))] == 1
    assert samples[("chat_storage_queue", (("queue", "hot"),))] == 4 and samples[("chat_storage_queue", (("queue", "hot_batches"),))] == 7
    assert samples[("chat_breaker_refused_total", (("breaker", "cassandra"),))] == 2
    assert samples[("chat_hot_rooms_pinned", ())] == 2
    assert samples[("chat_hot_events_total", (("event", "sends_throttled"),))] == 3
    states = {labels: v for (name, labels), v in samples.items() if name == "chat_breaker_state"}
    assert states[(("breaker", "cassandra"), ("state", "critical"))] == 1 and states[(("breaker", "cassandra"), ("state", "healthy"))] == 0
    assert states[(("breaker", "redis"), ("state", "healthy"))] == 1
    assert sum(states.values()) == 2  # one state each
    # Rooms are counted, never labelled: no channel ID in any label.
    assert not [labels for (name, labels) in samples if any(value in ("101", "102", "103") for _, value in labels)]


@pytest.mark.parametrize("states", [{}, {"cassandra": "caution"}])
def test_breaker_states_are_one_hot(states: dict[str, str]) -> None:
    samples = collect(FakeRooms([], states))
    assert sum(v for (name, _), v in samples.items() if name == "chat_breaker_state") == len(states)


async def test_the_adapter_reads_the_real_protection(tmp_path: Path) -> None:
    """ProtectionOps over a Protection on the embedded store: a pinned room is listed hot, the
    counters and queues are the protection's own, and an embedded node has no breakers."""
    store = SqliteMessageStore(tmp_path / "chat.sqlite3")
    await store.open()
    relay = LocalRelay()
    protection = Protection(node_id="n", store=store, relay=relay, lines=MemoryWaitingRooms(), guard_store=False, guard_relay=False)
    try:
        room = Channel(7, ChannelKind.ROOM, "lobby", "alice", 1)
        await store.create_channel(room, ["alice"])
        ops = ProtectionOps(protection)
        await ops.pin(7, True)
        (view,) = ops.snapshot()
        assert view.channel == 7 and view.hot and view.pinned is True and view.hot_since_ms is not None
        assert ops.counters()["rooms_heated"] == 1
        assert ops.queues() == {"interactive": 0, "hot": 0, "bot": 0, "hot_batches": 0}
        assert ops.health() == {} and ops.refusals() == {}
        await ops.pin(7, None)
        assert all(v.pinned is None for v in ops.snapshot())
    finally:
        await protection.close()
        await store.close()
