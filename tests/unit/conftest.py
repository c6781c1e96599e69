"""An in-process node (Starlette's TestClient runs its lifespan) for the API and WebSocket rows
that need no real process: the whole app, SQLite in a temp dir, in milliseconds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from chat.app import create_app
from chat.auth import issue_token
from chat.config import Settings, from_env
from chat.store.sqlite import SqliteMessageStore

SECRET = "inproc-secret-" + "x" * 40


class Node:
    """A TestClient on a fresh app, with helpers to sign requests as a user."""

    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        # Open WebSocket sessions, closed before the app shuts down.
        self.sockets: list[Any] = []

    def websocket(self, path: str, **kwargs: Any) -> Any:
        session = self.client.websocket_connect(path, **kwargs).__enter__()
        self.sockets.append(session)
        return session

    def token(self, user: str, **kwargs: Any) -> str:
        return issue_token(self.settings, user, **kwargs)

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def call(self, method: str, path: str, user: str | None = None, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if user is not None:
            headers.update(self.auth(user))
        return self.client.request(method, path, headers=headers, **kwargs)

    def channel(self, owner: str, members: list[str] | tuple[str, ...] = (), kind: str = "group") -> str:
        r = self.call("POST", "/v1/channels", owner, json={"kind": kind, "name": f"{kind} of {owner}", "members": list(members)})
        assert r.status_code == 201, r.text
        return str(r.json()["channel"]["id"])

    def post(self, user: str, channel: str, text: str, key: str) -> Any:
        return self.call("POST", f"/v1/channels/{channel}/messages", user, json={"text": text, "client_msg_id": key})


def make_node(tmp_path: Path, **env: str) -> Iterator[Node]:
    settings = from_env({"CHAT_JWT_SECRET": SECRET, "CHAT_DATA_DIR": str(tmp_path), "CHAT_NODE_ID": "inproc", **env})
    with TestClient(create_app(settings)) as client:
        node = Node(client, settings)
        try:
            yield node
        finally:
            for session in node.sockets:
                try:
                    session.__exit__(None, None, None)
                except Exception:  # noqa: BLE001 - already closed by the server
                    pass


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield from make_node(tmp_path)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteMessageStore]:
    """An open SQLite MessageStore of the test's own (the embedded adapter, no node around it)."""
    store = SqliteMessageStore(tmp_path / "chat.sqlite3")
    await store.open()
    yield store
    await store.close()
