"""Offline notifications in a cluster (ZooKeeper, Cassandra, Redis): every node enqueues, one
elected node delivers, and when it dies another takes over."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.e2e.test_discovery_cluster import zk_node
from tests.e2e.test_notifications import SECRET, WAIT_S, Webhook, open_dm, send, signed, uid
from tests.support import services
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.cassandra, pytest.mark.redis, pytest.mark.zookeeper]

DELIVERS = "notifications: on, for <Webhook http://127.0.0.1:{port}>; this node delivers them"


def notify(user: str, through: ServerProcess) -> str:
    """A DM to offline ``user`` sent through ``through``; its notification ID."""
    sender = uid("sender")
    return f"{send(through, sender, open_dm(through, sender, user), 'hi')['id']}:{user}"


async def test_one_node_delivers_and_another_takes_over_when_it_dies(tmp_path: Path) -> None:
    hook = Webhook().start()
    hosts = f"{services.ZOOKEEPER_HOSTS}/chat-test-{secrets.token_hex(4)}"
    env = {"CHAT_PUSH_WEBHOOK_URL": hook.url, "CHAT_PUSH_WEBHOOK_SECRET": SECRET, "CHAT_PUSH_TIMEOUT_S": "2"}
    nodes = [zk_node(tmp_path, 31 + i, hosts, **env) for i in range(2)]
    try:
        for n in nodes:
            n.start(60)
        delivering = [n for n in nodes if n.wait_for_line(DELIVERS.format(port=hook.port), 0)]
        assert len(delivering) == 1, [n.lines[-5:] for n in nodes]
        (leader,) = delivering
        (follower,) = [n for n in nodes if n is not leader]
        # Enqueued on the follower, delivered by the leader.
        key = notify(uid("bob"), follower)
        await hook.wait(lambda hits: key in {h.key for h in hits})
        leader.kill()
        assert follower.wait_for_line("notifications: this node delivers them now (elected)", WAIT_S)
        key = notify(uid("carol"), follower)
        hits = await hook.wait(lambda hits: key in {h.key for h in hits})
    finally:
        for n in nodes:
            n.kill()
        hook.stop()
    assert all(signed(h) for h in hits)
