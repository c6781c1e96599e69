"""A registered node in a process of its own, for tests that SIGKILL it.

    python -m tests.support.zk_node HOSTS NODE_ID SESSION_TIMEOUT_S

Prints ``ready`` once registered, then waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys

from discovery.registry.base import NodeInfo
from discovery.registry.zookeeper import ZooKeeperRegistry
from discovery.zk import ZkConnection


async def main(hosts: str, node_id: str, session_timeout_s: float) -> None:
    conn = ZkConnection(hosts, session_timeout_s=session_timeout_s, connect_timeout_s=10)
    await conn.start()
    registry = ZooKeeperRegistry(conn)
    await registry.start(NodeInfo(node_id, f"ws://{node_id}/v1/ws", 1000))
    print("ready", flush=True)
    await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
