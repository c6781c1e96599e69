"""ConfigStore contract: the same suite over the in-process (file) and ZooKeeper adapters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from discovery.config.base import ConfigStore
from discovery.config.memory import InProcessConfigStore
from discovery.config.schema import ConfigSnapshot, Schema, Setting, Value
from discovery.config.zookeeper import ZooKeeperConfigStore
from discovery.errors import ConfigRejected
from tests.support.recorder import Recorder


def _consistent(values: Mapping[str, Value]) -> list[str]:
    """A combination rule (the test's own): the join threshold at most 10 × the send threshold."""
    if float(values["hot_join_per_s"]) > 10 * float(values["hot_send_per_s"]):
        return [f"hot_join_per_s ({values['hot_join_per_s']}) must not exceed 10 × hot_send_per_s ({values['hot_send_per_s']})"]
    return []


SCHEMA = Schema(
    [
        Setting("hot_send_per_s", float, 20.0, "sends/s that make a room hot", minimum=0.1, maximum=1e6),
        Setting("hot_join_per_s", int, 10, "joins/s that make a room hot", minimum=1, maximum=1_000_000),
        Setting("batching", bool, True, "coalesce hot rooms' fan-out"),
        Setting("mode", str, "auto", "throttle mode", choices=("auto", "off")),
    ],
    check=_consistent,
)


@pytest.fixture
async def make_store(zk_sessions: Any, tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[ConfigStore]]]:
    """Each call: a store of another "node" over the same backing data."""
    made: list[ConfigStore] = []

    async def make() -> ConfigStore:
        store: ConfigStore = (
            InProcessConfigStore(SCHEMA, tmp_path / "config.json") if zk_sessions is None else ZooKeeperConfigStore(await zk_sessions.connect(), SCHEMA)
        )
        await store.start()
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def test_unset_settings_read_as_their_defaults(make_store: Callable[[], Awaitable[ConfigStore]]) -> None:
    store = await make_store()
    assert dict(store.snapshot().values) == {"hot_send_per_s": 20.0, "hot_join_per_s": 10, "batching": True, "mode": "auto"}
    assert store.get("hot_join_per_s") == 10
    with pytest.raises(ConfigRejected, match="unknown setting"):
        store.get("nope")


async def test_a_valid_change_applies_notifies_and_is_returned(make_store: Callable[[], Awaitable[ConfigStore]]) -> None:
    store = await make_store()
    seen: Recorder[ConfigSnapshot] = Recorder()
    store.subscribe(seen)
    snapshot = await store.set({"hot_send_per_s": 35, "mode": "off"})
    assert snapshot["hot_send_per_s"] == 35.0 and isinstance(snapshot["hot_send_per_s"], float)
    assert store.get("mode") == "off" and store.snapshot() == snapshot
    await seen.until(lambda s: any(x["mode"] == "off" for x in s), 2, "the change to be announced")


async def test_one_bad_value_refuses_the_whole_change_naming_every_problem(make_store: Callable[[], Awaitable[ConfigStore]]) -> None:
    store = await make_store()
    with pytest.raises(ConfigRejected) as refused:
        await store.set({"hot_send_per_s": 50, "hot_join_per_s": 2.5, "batching": "yes", "nope": 1, "mode": "fast"})
    assert len(refused.value.problems) == 4
    text = str(refused.value)
    for fragment in ("hot_join_per_s=2.5: must be an integer", "batching='yes': must be true or false", "nope: unknown setting", "mode='fast': must be one of"):
        assert fragment in text
    assert store.get("hot_send_per_s") == 20.0  # nothing applied
    with pytest.raises(ConfigRejected, match="at least 1"):
        await store.set({"hot_join_per_s": 0})


async def test_values_valid_alone_but_not_together_are_refused_against_what_is_stored(make_store: Callable[[], Awaitable[ConfigStore]]) -> None:
    a, b = await make_store(), await make_store()
    await a.set({"hot_send_per_s": 1.2})
    with pytest.raises(ConfigRejected, match="must not exceed 10 × hot_send_per_s"):
        await b.set({"hot_join_per_s": 15})  # 15 is in bounds, but too much for the 1.2 another node stored
    assert (await b.set({"hot_join_per_s": 15, "hot_send_per_s": 3}))["hot_join_per_s"] == 15  # together: fine
    c = await make_store()
    assert c.get("hot_join_per_s") == 15 and c.get("hot_send_per_s") == 3.0


async def test_none_sets_a_key_back_to_its_default(make_store: Callable[[], Awaitable[ConfigStore]]) -> None:
    store = await make_store()
    await store.set({"hot_join_per_s": 99})
    assert (await store.set({"hot_join_per_s": None}))["hot_join_per_s"] == 10


async def test_changes_are_durable_for_the_next_store(make_store: Callable[[], Awaitable[ConfigStore]]) -> None:
    first = await make_store()
    await first.set({"batching": False})
    second = await make_store()
    assert second.get("batching") is False


async def test_concurrent_sets_never_lose_one(make_store: Callable[[], Awaitable[ConfigStore]]) -> None:
    a, b = await make_store(), await make_store()
    await asyncio.gather(
        a.set({"hot_join_per_s": 7}),
        b.set({"hot_send_per_s": 8}),
        a.set({"mode": "off"}),
        b.set({"batching": False}),
    )
    c = await make_store()
    assert dict(c.snapshot().values) == {"hot_send_per_s": 8.0, "hot_join_per_s": 7, "batching": False, "mode": "off"}
