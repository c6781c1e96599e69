"""``chat config get [KEY]`` / ``chat config set KEY VALUE``: the dynamic settings from a shell.

With ZooKeeper (``CHAT_ZOOKEEPER_HOSTS``) the CLI talks to the cluster's config znode directly;
every node sees a change within a second. Embedded, the settings live in the data dir's
``config.json``: the CLI edits it while no node runs there; a running node holds the data dir
and takes changes through its API (``PUT /v1/ops/config``, role ``admin``) instead — the CLI
says so rather than edit a file the node would not reread.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import orjson

from chat import dynamic
from chat.config import Settings
from discovery.config.base import ConfigStore
from discovery.errors import ConfigRejected, DataDirInUse, DiscoveryError


async def _with_store(settings: Settings, action: str, key: str | None, value: str | None) -> int:
    store, closing = await _open(settings)
    try:
        if action == "get":
            values = store.snapshot().values
            if key is not None:
                if key not in values:
                    print(f"chat config: unknown setting {key!r} (known: {', '.join(sorted(values)) or 'none'})", file=sys.stderr)
                    return 2
                values = {key: values[key]}
            print(orjson.dumps(dict(values), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
            return 0
        assert key is not None and value is not None
        try:
            parsed = dynamic.SCHEMA.parse(key, value)
        except ConfigRejected as exc:
            print(f"chat config: {'; '.join(exc.problems)}", file=sys.stderr)
            return 2
        try:
            snapshot = await store.set({key: parsed})
        except ConfigRejected as exc:
            print(f"chat config: {'; '.join(exc.problems)}", file=sys.stderr)
            return 2
        print(f"{key} = {orjson.dumps(snapshot.values[key]).decode()}")
        return 0
    finally:
        await closing()


async def _open(settings: Settings) -> tuple[ConfigStore, Callable[[], Awaitable[None]]]:
    if settings.zookeeper_hosts:
        from discovery.config.zookeeper import ZooKeeperConfigStore
        from discovery.zk import ZkConnection

        conn = ZkConnection(settings.zookeeper_hosts, session_timeout_s=settings.zookeeper_session_timeout_s, connect_timeout_s=5.0)
        await conn.start()
        zk_store = ZooKeeperConfigStore(conn, dynamic.SCHEMA)
        await zk_store.start()

        async def close_zk() -> None:
            await zk_store.close()
            await conn.close()

        return zk_store, close_zk
    from discovery.config.memory import InProcessConfigStore
    from discovery.datadir import DataDirLock

    lock = DataDirLock.acquire(settings.data_dir)  # DataDirInUse: a node runs here
    file_store = InProcessConfigStore(dynamic.SCHEMA, settings.data_dir / "config.json")
    await file_store.start()

    async def close_file() -> None:
        await file_store.close()
        lock.release()

    return file_store, close_file


def run(settings: Settings, action: str, key: str | None, value: str | None) -> int:
    """The ``chat config`` command; returns the exit code."""
    try:
        return asyncio.run(_with_store(settings, action, key, value))
    except DataDirInUse as exc:
        print(
            f"chat config: {exc.message}; change a running embedded node with "
            f"PUT {settings.public_url.replace('ws', 'http', 1)}/v1/ops/config (an admin token: chat token ADMIN --role admin)",
            file=sys.stderr,
        )
        return 3
    except DiscoveryError as exc:
        print(f"chat config: {exc.message}", file=sys.stderr)
        return 3
