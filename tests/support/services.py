"""Where the real services of the test run are, and adapters built against them.

Addresses come from the same variables the product reads, with the defaults that
``scripts/services.sh`` uses. Every test gets its own Cassandra keyspace per session
and unique channel IDs, and its own Redis topic namespace, so tests never collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

CASSANDRA_HOSTS = os.environ.get("CHAT_TEST_CASSANDRA_HOSTS", "127.0.0.1:" + os.environ.get("CASSANDRA_PORT", "9042"))
REDIS_URL = os.environ.get("CHAT_TEST_REDIS_URL", "redis://127.0.0.1:" + os.environ.get("REDIS_PORT", "6379") + "/0")
ZOOKEEPER_HOSTS = os.environ.get("CHAT_TEST_ZOOKEEPER_HOSTS", "127.0.0.1:" + os.environ.get("ZOOKEEPER_PORT", "2181"))

# One keyspace per test session: migrations run once, tables are shared, IDs keep tests apart.
TEST_KEYSPACE = "chat_test_" + uuid.uuid4().hex[:8]


# Set once anything asked for the test keyspace: only then is there one to drop at the end.
keyspace_used = False


def cassandra_env(keyspace: str = TEST_KEYSPACE) -> dict[str, str]:
    global keyspace_used
    keyspace_used = keyspace_used or keyspace == TEST_KEYSPACE
    return {
        "CHAT_CASSANDRA_HOSTS": CASSANDRA_HOSTS,
        "CHAT_CASSANDRA_KEYSPACE": keyspace,
        "CHAT_CASSANDRA_CONSISTENCY": "ONE",
        "CHAT_CASSANDRA_MIGRATE": "1",
    }


def cassandra_store_factory() -> Callable[[], Any]:
    from chat.config import from_env
    from chat.store.cassandra import CassandraMessageStore

    settings = from_env({**cassandra_env(), "CHAT_JWT_SECRET": "x" * 32})
    return lambda: CassandraMessageStore.from_settings(settings)


def redis_relay_factory() -> Callable[[], Any]:
    from chat.relay.redis import RedisRelay

    namespace = "t" + uuid.uuid4().hex[:8] + ":"
    return lambda: RedisRelay(REDIS_URL, prefix=namespace)


def cql_session(keyspace: str | None = None) -> Any:
    """A plain blocking driver session for inspecting data behind the adapter."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    host, _, port = CASSANDRA_HOSTS.split(",")[0].partition(":")
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=30)
    cluster = Cluster([(host, int(port or 9042))], protocol_version=4, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    return cluster.connect(keyspace)


def drop_test_keyspace() -> None:
    """Best effort: runs must not pile keyspaces up in the shared Cassandra."""
    if not keyspace_used:
        return
    try:
        session = cql_session()
    except Exception:  # noqa: BLE001 - Cassandra is gone: nothing to clean
        return
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {TEST_KEYSPACE}", timeout=60)
    except Exception:  # noqa: BLE001
        pass
    finally:
        session.cluster.shutdown()
