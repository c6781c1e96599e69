"""Issue 12, item 9 (work per request is bounded), in process: a subscribe frame that lists one
channel 500 times with ``since`` costs what listing it once costs — counted in store reads and
frames sent, which do not depend on the machine's speed. (Before the fix it replayed 500 times:
~2.9 s of CPU per frame.) tests/e2e/test_work_bounds.py measures the CPU of a real process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from chat.app import create_app
from chat.config import from_env
from chat.models import Page
from chat.store.sqlite import SqliteMessageStore
from tests.unit.conftest import SECRET, Node
from tests.unit.test_ws import connect

pytestmark = pytest.mark.timeout(60)


class CountingStore:
    """The SQLite store, counting history reads (the replay's only store call)."""

    def __init__(self, inner: SqliteMessageStore) -> None:
        self._inner = inner
        self.history_reads = 0

    async def history(self, channel_id: int, **kwargs: Any) -> Page:
        self.history_reads += 1
        return await self._inner.history(channel_id, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[tuple[Node, CountingStore]]:
    settings = from_env({"CHAT_JWT_SECRET": SECRET, "CHAT_DATA_DIR": str(tmp_path), "CHAT_NODE_ID": "inproc"})
    store = CountingStore(SqliteMessageStore(tmp_path / "chat.sqlite3"))
    with TestClient(create_app(settings, store=store)) as client:  # type: ignore[arg-type]
        node = Node(client, settings)
        try:
            yield node, store
        finally:
            for session in node.sockets:
                session.__exit__(None, None, None)


def replay_cost(node: Node, store: CountingStore, channels: list[str], since: dict[str, str], expected_messages: int) -> tuple[int, int]:
    """Store reads and frames of one subscribe frame by alice (the reply is read to its end)."""
    ws = connect(node, "alice")
    reads = store.history_reads
    ws.send("subscribe", channels=channels, since=since)
    frames = [ws.recv() for _ in range(1 + expected_messages)]
    ws.nothing_pending()  # and nothing else came: no second replay
    assert frames[0]["op"] == "subscribed" and all(f["op"] == "message" for f in frames[1:])
    return store.history_reads - reads, len(frames)


def test_one_channel_listed_500_times_costs_one_replay(counted: tuple[Node, CountingStore]) -> None:
    node, store = counted
    group = node.channel("alice", ["bob"])
    for i in range(250):  # more than one replay page (200); two senders stay within the HTTP burst
        assert node.post(("alice", "bob")[i % 2], group, f"m{i}", f"k{i}").status_code == 201
    once = replay_cost(node, store, [group], {group: "0"}, 250)
    many = replay_cost(node, store, [group] * 500, {group: "0"}, 250)
    assert once == many == (2, 251)
