"""Hot rooms on a real two-node cluster (Cassandra, Redis, ZooKeeper for the dynamic settings),
scaled to two shared cores: a room with 200 member sockets flooded well above its threshold
while a quiet room carries 10 messages/s; a threshold changed at run time; a bot flooding its own
channel; a burst of joins through the waiting room."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
import websockets

from tests.e2e.test_cluster import make_channel, node
from tests.support import services
from tests.support.crowd import Crowd, flood
from tests.support.hot import Reader, Sender, cassandra_writes, latencies, quantile, set_config, until
from tests.support.server import ServerProcess
from tests.support.zk import _delete_tree

pytestmark = [pytest.mark.cassandra, pytest.mark.redis, pytest.mark.zookeeper, pytest.mark.timeout(300)]

ENV = {
    "CHAT_RATE_PER_S": "2000",
    "CHAT_RATE_BURST": "2000",
    "CHAT_USER_SEND_PER_S": "2000",
    "CHAT_USER_SEND_BURST": "2000",
    "CHAT_HANDSHAKE_PER_S": "100000",
    "CHAT_HANDSHAKE_BURST": "100000",
    "CHAT_ZOOKEEPER_SESSION_TIMEOUT_S": "4",
}
SETTINGS = {
    "hot_send_per_s": 40.0,  # cluster-wide
    "hot_join_per_s": 1000.0,  # 200 members subscribing at once do not make the room hot: its sends must
    "hot_cool_s": 3.0,
    "hot_room_send_per_s": 10.0,  # per node: the hot room's storage claims are bounded by this …
    "hot_room_send_burst": 10,
    "batch_statements_per_s": 2.0,  # … and its message writes by this (batches per second per node)
    "hot_room_join_per_s": 10,
    "coalesce_window_s": 0.1,  # a member socket gets at most ten frames a second of the hot room
}
MEMBERS, HOT_RATE, BURST_S, QUIET_RATE = 200, 100.0, 6.0, 20.0
SETTLE_S = 1.0  # after both nodes flagged the room: the backlog of the unprotected first moments drains
# Latency comparisons: "2× the baseline", or the baseline + this. The figures themselves are
# bench.hot_room's (BENCHMARKS.md); here the check is only for the failure mode, which costs the
# other room seconds (0.5-2.2 s measured unprotected), while scheduling on two shared cores alone
# moves a p99 of tens of ms by ~0.1 s.
FLOOR_S = 0.25


@dataclass
class Cluster:
    a: ServerProcess
    b: ServerProcess
    zk: str

    @property
    def nodes(self) -> tuple[ServerProcess, ServerProcess]:
        return self.a, self.b


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("hot")
    chroot = f"/chat-hot-{secrets.token_hex(4)}"
    zk = services.ZOOKEEPER_HOSTS + chroot
    set_config(zk, SETTINGS)  # what both nodes find at start
    a = node(tmp, 61, CHAT_ZOOKEEPER_HOSTS=zk, **ENV).start(90)
    b = node(tmp, 62, CHAT_ZOOKEEPER_HOSTS=zk, **ENV).start(90)
    yield Cluster(a, b, zk)
    a.kill()
    b.kill()
    _delete_tree(services.ZOOKEEPER_HOSTS, chroot)


async def line(server: ServerProcess, needle: str, timeout: float) -> float:
    """Seconds until ``server`` logged a line containing ``needle`` (bounded; fails past it)."""
    started = time.monotonic()
    assert await asyncio.to_thread(server.wait_for_line, needle, timeout), f"{server.env['CHAT_NODE_ID']} never logged {needle!r}"
    return time.monotonic() - started


async def test_a_hot_room_is_protected_on_both_nodes_and_loses_nothing(cluster: Cluster) -> None:
    run = secrets.token_hex(3)
    members = [f"m{run}-{i}" for i in range(MEMBERS)]
    hot = make_channel(cluster.a, f"own{run}", "room", members)
    quiet = make_channel(cluster.a, f"q{run}", "room", [f"qa{run}", f"qb{run}"])
    jobs = [("127.0.0.1", s.port, f"/v1/ws?token={s.token(u)}", hot) for s, u in zip(cluster.nodes * (MEMBERS // 2), members, strict=True)]
    crowd = await Crowd(jobs).__aenter__()  # the room's members, in a process of their own
    quiet_readers = [await Reader.open(s.ws_url, s.token(f"q{x}{run}"), quiet) for s, x in zip(cluster.nodes, "ab", strict=True)]
    senders = [await Sender.open(cluster.nodes[i % 2].ws_url, cluster.nodes[i % 2].token(members[i]), hot, f"h{i}") for i in range(16)]
    quiet_sender = await Sender.open(cluster.a.ws_url, cluster.a.token(f"q{run}"), quiet, "q")
    cql = await asyncio.to_thread(services.cql_session)
    try:
        quiet_run = asyncio.create_task(quiet_sender.run(QUIET_RATE, 4 + BURST_S + 1))
        base_from = time.monotonic()
        await asyncio.sleep(4)  # the baseline: the quiet room alone
        burst_from = time.monotonic()
        flagged = [asyncio.create_task(line(s, f"room {hot} is hot", 10)) for s in cluster.nodes]
        burst = asyncio.gather(*(s.run(HOT_RATE / len(senders), BURST_S) for s in senders))
        took = await asyncio.gather(*flagged)
        assert max(took) < 2.0, f"flagged after {took} s"  # on both nodes
        # From here both nodes batch; once the sends admitted before that are written, count what
        # Cassandra is asked to write for the rest of the burst.
        await asyncio.sleep(SETTLE_S)  # a span of the burst to let pass, not an event
        writes_before = await asyncio.to_thread(cassandra_writes, cql, "messages")
        counted_from, sent_before, quiet_before = time.monotonic(), [s.sent for s in senders], quiet_sender.sent
        await burst
        burst_until = time.monotonic()
        await quiet_run
        await until(lambda: all(s.settled() for s in [*senders, quiet_sender]), 20, "every send answered")
        writes = await asyncio.to_thread(cassandra_writes, cql, "messages") - writes_before
        counted_for = time.monotonic() - counted_from
        acked = {i for s in senders for i in s.acked.values()}
        refusals = [e for s in senders for e in s.errors]
        assert len(acked) + len(refusals) == sum(s.sent for s in senders)
        assert refusals and all(e["code"] == "throttled" and e["retry_after_ms"] >= 1 for e in refusals), refusals[:3]
        # Storage: the hot room's writes reach Cassandra in batches, within the configured budget.
        hot_counted = sum(1 for s, n in zip(senders, sent_before, strict=True) for key in s.acked if int(key.rsplit("-", 1)[1]) >= n)
        quiet_counted = quiet_sender.sent - quiet_before
        budget = 2 * SETTINGS["batch_statements_per_s"] * (counted_for + 1)  # two nodes
        assert writes - quiet_counted <= budget, (writes, quiet_counted, budget)
        assert writes - quiet_counted < hot_counted / 2, f"{writes} writes for {hot_counted} hot messages: not batched"
        # Every acked message reaches every member once, each sender's in order; and is stored.
        readers = await crowd.members()
        for _ in range(40):  # another process: its state is asked for, not awaited
            if all(acked <= set(r.ids) for r in readers):
                break
            await asyncio.sleep(0.5)
            readers = await crowd.members()
        for reader in readers:
            assert acked <= set(reader.ids), f"{len(acked - set(reader.ids))} acked messages never reached a member"
            assert len(reader.ids) == len(set(reader.ids)), "a message arrived twice"
            for sender in senders:
                own = [i for i in reader.ids if i in set(sender.acked.values())]
                assert own == sorted(own, key=int)
        assert sum(r.batches for r in readers) > 0 and sum(r.resyncs for r in readers) == 0
        with cluster.b.http(members[1]) as http:
            stored = _all_ids(http, hot)
        assert acked <= stored
        cooled = await asyncio.gather(*(line(s, f"room {hot} is no longer hot", 15) for s in cluster.nodes))
        assert max(cooled) < 15
        # The quiet room keeps its latency once the hot room is protected. Until a room is flagged
        # (well under a second here) it is served like any other, so that moment is left out.
        # The floor: on two cores that other engineers' processes share (we measured them holding
        # ~1.4 cores), scheduling alone moves a p99 of a few tens of ms by tens of ms; unprotected,
        # the first moments of this burst cost the quiet room 0.5-2 s, which no floor here hides.
        base = quantile(latencies(quiet_readers, base_from, burst_from), 0.99)
        during = quantile(latencies(quiet_readers, counted_from, burst_until), 0.99)
        assert during <= max(2 * base, base + FLOOR_S), f"quiet p99 {during * 1000:.1f} ms vs {base * 1000:.1f} ms without the hot room"
    finally:
        for client in [*quiet_readers, *senders, quiet_sender]:
            await client.close()
        await crowd.__aexit__()
        await asyncio.to_thread(cql.cluster.shutdown)


async def test_a_threshold_changed_at_run_time_applies_on_both_nodes_within_a_second(cluster: Cluster) -> None:
    waits = [asyncio.create_task(line(s, "hot_fetch_per_s=7.5", 5)) for s in cluster.nodes]
    await asyncio.to_thread(set_config, cluster.zk, {"hot_fetch_per_s": 7.5})
    took = await asyncio.gather(*waits)
    assert max(took) < 1.0, f"applied after {took} s"
    # … and it is the threshold that counts: a room read 12 times/s is hot now on both nodes.
    room = make_channel(cluster.a, f"f{secrets.token_hex(3)}", "room", [])
    flagged = [asyncio.create_task(line(s, f"room {room} is hot", 6)) for s in cluster.nodes]
    with cluster.a.http(f"f{secrets.token_hex(3)}") as anyone:
        assert anyone.post(f"/v1/channels/{room}/members", json={}).status_code == 200
        for _ in range(24):
            anyone.get(f"/v1/channels/{room}/messages", params={"limit": 5})
            await asyncio.sleep(1 / 12)
    await asyncio.gather(*flagged)
    await asyncio.to_thread(set_config, cluster.zk, {"hot_fetch_per_s": 50.0})


async def test_a_bot_flooding_its_own_channel_leaves_a_normal_room_its_latency(cluster: Cluster) -> None:
    run = secrets.token_hex(3)
    # Bots: at most 15 writes/s per node. And no hot rooms in this test: the lane alone must do it.
    # One bot write may wait for the lane; the rest are refused at once. (With a longer line each
    # of the bot's sockets stalls behind its waiting send, and its last answers come a minute late.)
    lanes = {"lane_budget_per_s": 300.0, "lane_bot_max_share": 0.05, "lane_bot_queue": 1, "hot_send_per_s": 1e6, "hot_fanout_per_s": 1e9}
    await asyncio.to_thread(set_config, cluster.zk, lanes)
    bot = f"bot{run}"
    bot_room = make_channel(cluster.a, bot, "group", [])
    room = make_channel(cluster.a, f"n{run}", "group", [f"na{run}", f"nb{run}"])
    readers = [await Reader.open(s.ws_url, s.token(f"n{x}{run}"), room) for s, x in zip(cluster.nodes, "ab", strict=True)]
    person = await Sender.open(cluster.a.ws_url, cluster.a.token(f"n{run}"), room, "p")
    # The bot posts through many sockets at once (each socket's requests are handled in order),
    # from a process of its own (its frames would slow this test's loop, not the node).
    token = cluster.a.token(bot, roles=("bot",))
    jobs = [("127.0.0.1", cluster.a.port, f"/v1/ws?token={token}", bot_room, 20.0, 5.0, f"b{i}") for i in range(20)]
    try:
        base_from = time.monotonic()
        await person.run(QUIET_RATE, 4)
        flood_from = time.monotonic()
        flooded, _ = await asyncio.gather(flood(jobs), person.run(QUIET_RATE, 5))  # 400 messages/s offered by the bot: 27× its share
        flood_until = flood_from + 5
        await until(person.settled, 20, "every send answered")
        assert "unanswered" not in flooded, flooded
        assert flooded["acked"] <= 15 * (time.monotonic() - flood_from + 1), f"the bot stored {flooded['acked']}: above its lane's share"
        assert set(flooded["refused"]) == {"rate_limited"} and not flooded["without_retry"], flooded
        assert not person.errors
        base = quantile(latencies(readers, base_from, flood_from), 0.99)
        during = quantile(latencies(readers, flood_from, flood_until), 0.99)
        # The floor: see the hot room's test. Unprotected (lanes and the bot limit off) a flood of
        # 1,000 messages/s gave this room a p99 of 2.2 s against 15 ms. Protected, the bot's frames
        # are still parsed and refused on this room's node: ~0.2 cores per 1,000/s, which on this
        # shared machine shows in every process's latency (hence the modest flood).
        assert during <= max(2 * base, base + FLOOR_S), f"normal p99 {during * 1000:.1f} ms vs {base * 1000:.1f} ms without the bot"
    finally:
        for client in [*readers, person]:
            await client.close()
        await asyncio.to_thread(set_config, cluster.zk, {k: SETTINGS.get(k) for k in lanes})  # the module's values again


async def test_a_burst_of_joins_waits_in_line_and_is_admitted_in_order_within_the_budget(cluster: Cluster) -> None:
    run = secrets.token_hex(3)
    owner = f"w{run}"
    room = make_channel(cluster.a, owner, "room", [])
    # Hot first (and kept hot), so every join below meets the waiting room: a member's socket
    # subscribes and unsubscribes over and over (subscribes count with joins; they store nothing).
    await asyncio.to_thread(set_config, cluster.zk, {"hot_join_per_s": 10.0})
    anchor = await Reader.open(cluster.a.ws_url, cluster.a.token(owner), room)  # keeps the node's relay subscription
    hot = [asyncio.create_task(line(s, f"room {room} is hot", 8)) for s in cluster.nodes]
    keep_hot = asyncio.create_task(_churn(cluster.a, owner, room, 25.0))
    await asyncio.gather(*hot)
    users = [f"j{run}-{i:03}" for i in range(100)]
    sockets = [await Reader.open(cluster.nodes[i % 2].ws_url, cluster.nodes[i % 2].token(u), None) for i, u in enumerate(users)]
    positions: dict[str, int] = {}
    try:
        async with httpx.AsyncClient(timeout=10) as http:

            async def join(i: int, ticket: str | None = None) -> httpx.Response:
                server = cluster.nodes[i % 2]
                body = {"ticket": ticket} if ticket else {}
                headers = {"Authorization": f"Bearer {server.token(users[i])}"}
                return await http.post(f"{server.http_url}/v1/channels/{room}/members", json=body, headers=headers)

            started = time.monotonic()
            first = await asyncio.gather(*(join(i) for i in range(len(users))))  # 100 joins, as fast as they go
            took = time.monotonic() - started
            for user, r in zip(users, first, strict=True):
                assert r.status_code in (200, 429), r.text
                if r.status_code == 429:
                    error = r.json()["error"]
                    assert error["code"] == "throttled" and error["retry_after_ms"] >= 1 and error["position"] >= 1
                    positions[user] = error["position"]
            admitted_now = [u for u, r in zip(users, first, strict=True) if r.status_code == 200]
            # The budget is a rate: a burst's worth at once, then per second while the joins keep coming.
            allowed = SETTINGS["hot_room_join_per_s"] * (1 + took)
            assert len(admitted_now) <= allowed and len(positions) >= len(users) - allowed, (len(admitted_now), took)

            def admitted(s: Reader) -> dict[str, object] | None:
                return next((f for f in s.other if f["op"] == "admitted"), None)

            waiting = [s for u, s in zip(users, sockets, strict=True) if u in positions]
            await until(lambda: all(admitted(s) for s in waiting), 30, "an admission for everyone in line")
            tickets = sorted((float(admitted(s)["_at"]), int(str(admitted(s)["ticket"]))) for s in waiting)  # type: ignore[index, arg-type]
            bursts = _bursts([t for t, _ in tickets], gap=0.4)
            assert all(len(b) <= SETTINGS["hot_room_join_per_s"] for b in bursts), [len(b) for b in bursts]
            order = [ticket for _, ticket in tickets]
            for earlier, later in itertools.pairwise(bursts):  # every burst admits only people who came after the last
                assert max(order[i] for i in earlier) < min(order[i] for i in later)
            again = await asyncio.gather(*(join(users.index(u), str(admitted(s)["ticket"])) for u, s in zip(users, sockets, strict=True) if u in positions))  # type: ignore[index]
            assert all(r.status_code == 200 for r in again), [r.text for r in again if r.status_code != 200][:3]
    finally:
        keep_hot.cancel()
        for client in [anchor, *sockets]:
            await client.close()
        await asyncio.to_thread(set_config, cluster.zk, {"hot_join_per_s": SETTINGS["hot_join_per_s"]})


async def _churn(server: ServerProcess, user: str, room: str, per_s: float) -> None:
    """Subscribe and unsubscribe ``room`` ``per_s`` times a second until cancelled."""
    async with websockets.connect(f"{server.ws_url}?token={server.token(user)}") as conn:
        await conn.recv()  # hello
        start, i = time.monotonic(), 0
        while True:
            for op in ("subscribe", "unsubscribe"):
                await conn.send(orjson.dumps({"op": op, "id": op, "channels": [room]}).decode())
                await conn.recv()
            i += 1
            delay = start + i / per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


def _bursts(times: list[float], gap: float) -> list[list[int]]:
    """Indexes of ``times`` (sorted) grouped into bursts separated by more than ``gap`` seconds."""
    out: list[list[int]] = []
    for i, t in enumerate(times):
        if not out or t - times[out[-1][-1]] > gap:
            out.append([])
        out[-1].append(i)
    return out


def _all_ids(http: httpx.Client, room: str) -> set[str]:
    ids: set[str] = set()
    after = "0"
    while True:
        page = http.get(f"/v1/channels/{room}/messages", params={"after": after, "limit": 200}).json()
        ids |= {m["id"] for m in page["messages"]}
        if not page["has_more"]:
            return ids
        after = page["messages"][-1]["id"]
