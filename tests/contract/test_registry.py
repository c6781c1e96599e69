"""Registry contract: the same suite over the static and ZooKeeper adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from discovery.registry.base import NodeInfo, Registry, RegistryView
from discovery.registry.static import StaticRegistry
from discovery.registry.zookeeper import ZooKeeperRegistry
from tests.support.recorder import Recorder

INTERVAL_S = 0.2  # report interval of the ZooKeeper adapter in these tests


def me(node_id: str = "n1", **kw: Any) -> NodeInfo:
    return NodeInfo(node_id, f"ws://{node_id}:8000/v1/ws", capacity=1000, started_at_ms=1_700_000_000_000, **kw)


@pytest.fixture
async def make_registry(zk_sessions: Any) -> AsyncIterator[Callable[[], Awaitable[Registry]]]:
    made: list[Registry] = []

    async def make() -> Registry:
        registry: Registry = StaticRegistry() if zk_sessions is None else ZooKeeperRegistry(await zk_sessions.connect(), report_interval_s=INTERVAL_S)
        made.append(registry)
        return registry

    yield make
    for registry in made:
        await registry.close()


async def test_a_started_node_sees_itself_in_a_live_view(make_registry: Callable[[], Awaitable[Registry]]) -> None:
    registry = await make_registry()
    assert registry.view().nodes == ()
    await registry.start(me())
    view = registry.view()
    assert view.nodes == (me(),)
    assert view.stale_since is None and view.usable(now=0.0, max_stale_s=0.0)
    assert await registry.nodes() == [me()]
    assert registry.view() is view  # nothing changed: answered from the cache


async def test_draining_is_written_at_once_and_visible_when_report_returns(make_registry: Callable[[], Awaitable[Registry]]) -> None:
    registry = await make_registry()
    await registry.start(me())
    await registry.report(3, draining=True)
    assert registry.view().nodes[0].draining
    await registry.report(4)  # draining=None keeps the flag
    await registry.report(5, draining=False)
    assert not registry.view().nodes[0].draining


async def test_a_burst_of_load_reports_ends_with_the_latest_value_visible(make_registry: Callable[[], Awaitable[Registry]]) -> None:
    registry = await make_registry()
    await registry.start(me())
    views: Recorder[RegistryView] = Recorder()
    registry.subscribe(views)
    for n in range(1, 43):
        await registry.report(n)
    await views.until(lambda vs: bool(vs) and vs[-1].nodes[0].connections == 42, INTERVAL_S + 3, "the last report to show")
    assert registry.view().nodes[0] == me(connections=42)


async def test_unsubscribed_listeners_hear_nothing_more(make_registry: Callable[[], Awaitable[Registry]]) -> None:
    registry = await make_registry()
    views: Recorder[RegistryView] = Recorder()
    unsubscribe = registry.subscribe(views)
    await registry.start(me())
    await views.until(lambda vs: any(v.nodes == (me(),) for v in vs), 3, "the start to show")
    unsubscribe()
    seen = len(views.items)
    await registry.report(9, draining=True)
    assert len(views.items) == seen


async def test_close_deregisters_and_is_idempotent(make_registry: Callable[[], Awaitable[Registry]]) -> None:
    registry = await make_registry()
    await registry.start(me())
    await registry.close()
    await registry.close()
    assert registry.view().nodes == ()
    await registry.report(1, draining=True)  # after close: ignored, never raises
