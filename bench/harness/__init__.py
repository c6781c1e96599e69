"""The benchmark harness: one copy of everything the figure scripts share.

* ``measure`` — histograms, CPU meters (per process group and machine-wide), waiting for an idle
  machine, machine facts, results JSON, the figure scripts' common ``--quick``/``--name`` options.
* ``node`` — the node under test: ``python -m chat serve`` in a subprocess configured by
  ``CHAT_*`` variables (optionally pinned with ``taskset``), or a running node given by URL.
* ``wire`` — a lean RFC 6455 client on ``asyncio.Protocol`` (the asyncio load generator).
* ``crowd`` — many receiving sockets spread over worker processes (an ``epoll`` client, or the
  asyncio one), for fan-out and memory.
* ``load`` — open-loop schedules, closed-loop drivers and the send→ack/delivery bookkeeping.
* ``cluster`` — Cassandra + Redis runs: keyspaces, node environment, service processes, GC pauses.
* ``profile`` — ``py-spy`` on the node.

Nothing here touches the product's private members: a node is driven through its process, its
environment, its HTTP API and its WebSocket protocol (docs/protocol.md).
"""
