"""The PresenceStore contract (presence/store/base.py), run against every adapter.

The Redis adapter runs on the shared Redis with a key prefix of its own per test (deleted
afterwards). Time is injected: no test waits for a timeout.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
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
from presence.store.base import PresenceStore
from presence.store.memory import MemoryPresenceStore
from tests.support import services
from tests.support.presence import T0, redis_store

T = 30_000  # timeout_ms
BACKENDS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]

StoreFactory = Callable[..., contextlib.AbstractAsyncContextManager[Any]]


@pytest.fixture(params=BACKENDS)
def presence_store_factory(request: pytest.FixtureRequest) -> StoreFactory:
    """``async with factory(**kw) as store``: a fresh, empty store each time."""
    if request.param == "memory":

        @contextlib.asynccontextmanager
        async def memory(**kwargs: Any) -> AsyncIterator[MemoryPresenceStore]:
            yield MemoryPresenceStore(**kwargs)

        return memory
    return lambda **kwargs: redis_store(services.REDIS_URL, **kwargs)


@pytest.fixture
async def store(presence_store_factory: StoreFactory) -> AsyncIterator[PresenceStore]:
    async with presence_store_factory(timeout_ms=T) as s:
        yield s


def beat(user: str, device: str, at: int) -> DeviceEvent:
    return DeviceEvent(user, device, at)


def close(user: str, device: str, at: int) -> DeviceEvent:
    return DeviceEvent(user, device, at, CLOSE)


async def test_first_heartbeat_brings_the_user_online(store: PresenceStore) -> None:
    assert store.timeout_ms == T
    got = await store.apply([beat("alice", "phone", T0), beat("bob", "s1", T0 + 1), beat("alice", "laptop", T0 + 2)])
    assert got == [Transition("alice", ONLINE, T0), Transition("bob", ONLINE, T0 + 1)]
    assert await store.apply([beat("alice", "phone", T0 + 5000)]) == []
    states = await store.query(["alice", "bob", "nobody"])
    assert states == {
        "alice": UserPresence(ONLINE, T0),  # online since T0: plain heartbeats do not move it
        "bob": UserPresence(ONLINE, T0 + 1),
        "nobody": UserPresence(OFFLINE, None),
    }


async def test_clean_close_of_the_last_device_goes_offline(store: PresenceStore) -> None:
    await store.apply([beat("alice", "phone", T0), beat("alice", "laptop", T0)])
    assert await store.apply([close("alice", "phone", T0 + 10)]) == []
    assert await store.apply([close("alice", "laptop", T0 + 20)]) == [Transition("alice", OFFLINE, T0 + 20)]
    assert await store.apply([close("alice", "laptop", T0 + 30), close("carol", "x", T0)]) == []
    assert (await store.query(["alice", "carol"])) == {
        "alice": UserPresence(OFFLINE, T0 + 20),
        "carol": UserPresence(OFFLINE, None),
    }


async def test_a_batch_is_applied_in_order(store: PresenceStore) -> None:
    got = await store.apply([beat("a", "1", T0), close("a", "1", T0 + 1), beat("a", "2", T0 + 2), close("nobody", "1", T0)])
    assert got == [Transition("a", ONLINE, T0), Transition("a", OFFLINE, T0 + 1), Transition("a", ONLINE, T0 + 2)]


async def test_expire_removes_devices_past_their_deadline_only(store: PresenceStore) -> None:
    await store.apply([beat("alice", "phone", T0), beat("bob", "s1", T0), beat("bob", "s2", T0 + 10_000)])
    # At the deadline a device is still live; just after it, it is due.
    assert (await store.expire(T0 + T, 100)).transitions == []
    assert (await store.query(["alice"]))["alice"].status == ONLINE
    expiry = await store.expire(T0 + T + 1, 100)
    assert expiry.transitions == [Transition("alice", OFFLINE, T0)] and not expiry.more
    assert (await store.query(["bob"]))["bob"] == UserPresence(ONLINE, T0)
    assert (await store.expire(T0 + 10_000 + T + 1, 100)).transitions == [Transition("bob", OFFLINE, T0 + 10_000)]
    assert (await store.query(["alice", "bob"])) == {
        "alice": UserPresence(OFFLINE, T0),
        "bob": UserPresence(OFFLINE, T0 + 10_000),
    }


async def test_a_device_past_its_deadline_reads_online_until_swept_and_may_come_back(store: PresenceStore) -> None:
    await store.apply([beat("alice", "phone", T0)])
    # Past the deadline, not swept: queries agree with what watchers were told (online).
    assert (await store.query(["alice"]))["alice"] == UserPresence(ONLINE, T0)
    assert (await store.online_among(["alice"], 10)).users == ["alice"]
    # It heartbeats again before any sweep: no transition either way.
    assert await store.apply([beat("alice", "phone", T0 + T + 10)]) == []
    assert (await store.expire(T0 + T + 20, 100)).transitions == []


async def test_expire_is_bounded_and_reports_more(store: PresenceStore) -> None:
    await store.apply([beat(f"u{i}", "d", T0 + i) for i in range(25)])
    now = T0 + 2 * T
    first = await store.expire(now, 10)
    assert [t.user for t in first.transitions] == [f"u{i}" for i in range(10)] and first.more
    second = await store.expire(now, 10)
    third = await store.expire(now, 10)
    assert len(second.transitions) == 10 and second.more
    assert [t.user for t in third.transitions] == [f"u{i}" for i in range(20, 25)] and not third.more
    assert (await store.expire(now, 10)).transitions == []


async def test_clock_stepping_back_keeps_the_latest_times(store: PresenceStore) -> None:
    await store.apply([beat("alice", "phone", T0 + 10_000)])
    assert await store.apply([beat("alice", "phone", T0)]) == []
    assert (await store.query(["alice"]))["alice"] == UserPresence(ONLINE, T0 + 10_000)
    assert (await store.expire(T0 + T + 1, 100)).transitions == []  # deadline from the later beat
    assert await store.apply([close("alice", "phone", T0 + 1)]) == [Transition("alice", OFFLINE, T0 + 10_000)]


async def test_clock_jumping_forward_expires_at_the_next_sweep(store: PresenceStore) -> None:
    await store.apply([beat("alice", "phone", T0), beat("bob", "phone", T0)])
    jumped = T0 + 3600_000
    await store.apply([beat("bob", "phone", jumped)])
    assert (await store.expire(jumped, 100)).transitions == [Transition("alice", OFFLINE, T0)]


async def test_query_of_many_users_answers_each_in_order(store: PresenceStore) -> None:
    users = [f"user-{i}" for i in range(2500)]
    await store.apply([beat(u, "d", T0 + i) for i, u in enumerate(users[::2])])
    states = await store.query(users)
    assert list(states) == users
    for i, user in enumerate(users):
        expected = UserPresence(ONLINE, T0 + i // 2) if i % 2 == 0 else UserPresence(OFFLINE, None)
        assert states[user] == expected


async def test_online_among_counts_all_and_lists_up_to_the_limit(store: PresenceStore) -> None:
    members = [f"m{i}" for i in range(1500)]
    online = members[3::7]
    await store.apply([beat(u, "d", T0) for u in online])
    sample = await store.online_among(members + members[:10], 100)
    assert sample.count == len(online) and sample.users == online[:100]
    assert (await store.online_among([], 100)).count == 0


async def test_names_are_opaque(store: PresenceStore) -> None:
    odd = ["a:b", "7:x", "ü ñ", "{tag}", "*", "a\\b"]
    await store.apply([beat(u, f"{u}:dev", T0) for u in odd])
    assert all(p.status == ONLINE for p in (await store.query(odd)).values())
    expired = await store.expire(T0 + T + 1, 100)
    assert sorted(t.user for t in expired.transitions) == sorted(odd)


# Every adapter behaves like presence.state on random histories.

_history = st.lists(
    st.tuples(
        st.sampled_from(["beat", "close", "sweep"]),
        st.sampled_from(["ann", "ben"]),
        st.sampled_from(["d1", "d2"]),
        st.integers(-5_000, T),  # ms since the previous step; negative = the clock stepped back
    ),
    max_size=30,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=_history)
async def test_random_histories_match_the_pure_state(presence_store_factory: StoreFactory, history: list[tuple[str, str, str, int]]) -> None:
    model = PresenceState(T)
    now = T0
    async with presence_store_factory(timeout_ms=T) as store:
        for what, user, device, step in history:
            now += step
            if what == "sweep":
                expected = model.expire(now, 1000)
                got = await store.expire(now, 1000)
                assert got.transitions == expected.transitions
            else:
                event = DeviceEvent(user, device, now, CLOSE if what == "close" else "heartbeat")
                assert await store.apply([event]) == model.apply([event])
            users = ["ann", "ben", "cid"]
            assert await store.query(users) == {u: model.presence(u) for u in users}
