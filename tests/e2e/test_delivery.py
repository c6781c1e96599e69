"""Delivery guarantees end to end: every subscribed socket gets every message of its channels
exactly once and in ID order; a reconnect with ``since`` recovers exactly what was missed;
a slow reader is told to ``resync`` instead of slowing anyone else down."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from typing import Any

import pytest

from tests.support.client import WsClient
from tests.support.server import ServerProcess


def uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def open_channel(server: ServerProcess, kind: str, users: list[str]) -> str:
    """A channel of ``kind`` whose members are ``users`` (the first one opens it)."""
    owner, *others = users
    with server.http(owner) as http:
        if kind == "dm":
            r = http.post("/v1/dms", json={"user": others[0]})
            assert r.status_code in (200, 201), r.text
            return r.json()["channel"]["id"]
        if kind == "group":
            r = http.post("/v1/channels", json={"kind": "group", "name": "g", "members": others})
            assert r.status_code == 201, r.text
            return r.json()["channel"]["id"]
        r = http.post("/v1/channels", json={"kind": "room", "name": "r"})
        assert r.status_code == 201, r.text
        channel = r.json()["channel"]["id"]
    for user in others:  # rooms are joined, not invited to
        with server.http(user) as http:
            assert http.post(f"/v1/channels/{channel}/members").status_code == 200
    return channel


def users_for(kind: str) -> list[str]:
    names = ["alice", "bob"] if kind == "dm" else ["alice", "bob", "carol"]
    return [uid(n) for n in names]


async def connect(server: ServerProcess, user: str, **kwargs: Any) -> WsClient:
    return await WsClient.connect(server.ws_url, server.token(user), **kwargs)


async def subscribe(client: WsClient, channel: str, since: str | None = None) -> None:
    fields: dict[str, Any] = {"channels": [channel]}
    if since is not None:
        fields["since"] = {channel: since}
    reply = await client.request("subscribe", "subscribed", **fields)
    assert reply["op"] == "subscribed" and reply["channel"] == channel, reply


async def pipelined_sends(client: WsClient, channel: str, texts: list[str]) -> list[str]:
    """Send without waiting, then collect the acks; returns the stored IDs."""
    frame_ids = [await client.send("send", channel=channel, text=t, client_msg_id=uid("c")) for t in texts]
    acks = [await client.expect("ack", id=f) for f in frame_ids]
    return [a["message"]["id"] for a in acks]


async def pipelined_to_many(client: WsClient, work: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Like pipelined_sends over several channels; returns (channel, stored ID) pairs."""
    frame_ids = [await client.send("send", channel=c, text=t, client_msg_id=uid("c")) for c, t in work]
    acks = [await client.expect("ack", id=f) for f in frame_ids]
    return [(a["message"]["channel"], a["message"]["id"]) for a in acks]


def post(server: ServerProcess, user: str, channel: str, texts: list[str]) -> list[str]:
    ids = []
    with server.http(user) as http:
        for text in texts:
            r = http.post(f"/v1/channels/{channel}/messages", json={"text": text, "client_msg_id": uid("c")})
            assert r.status_code == 201, r.text
            ids.append(r.json()["message"]["id"])
    return ids


async def received_ids(client: WsClient, channel: str, count: int, timeout: float = 15.0) -> list[str]:
    return [m["id"] for m in await client.messages(count, channel, timeout)]


def assert_in_order_once(ids: list[str], label: str) -> None:
    as_ints = [int(i) for i in ids]
    assert len(set(as_ints)) == len(as_ints), f"{label}: a message was delivered twice"
    assert as_ints == sorted(as_ints), f"{label}: messages out of ID order"


KINDS = ["group", "room", "dm"]


def _max_send_buffer() -> int:
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as fh:
            return int(fh.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * 1024 * 1024


@pytest.mark.parametrize("kind", KINDS)
async def test_every_subscribed_socket_gets_every_message_in_order(server: ServerProcess, kind: str) -> None:
    users = users_for(kind)
    channel = open_channel(server, kind, users)
    alice, bob = users[0], users[1]
    phone = await connect(server, alice)
    laptop = await connect(server, alice)  # a second device of the same user
    others = [await connect(server, u) for u in users[1:]]
    sockets = {"alice/phone": phone, "alice/laptop": laptop, **dict(zip(users[1:], others, strict=True))}
    try:
        for client in sockets.values():
            await subscribe(client, channel)
        sent: list[str] = []
        for round_no in range(3):
            # Several senders at once, over both WebSocket and HTTP.
            batches = await asyncio.gather(
                pipelined_sends(phone, channel, [f"phone {round_no}.{i}" for i in range(10)]),
                pipelined_sends(others[0], channel, [f"{bob} {round_no}.{i}" for i in range(10)]),
                asyncio.to_thread(post, server, users[-1], channel, [f"http {round_no}.{i}" for i in range(5)]),
            )
            for batch in batches:
                sent += batch
        expected = sorted(sent, key=int)
        for label, client in sockets.items():
            got = await received_ids(client, channel, len(expected))
            assert_in_order_once(got, label)
            assert got == expected, f"{label} did not get exactly the messages sent"
        for label, client in sockets.items():
            extra = [f for f in await client.drain_nothing(0.2) if f["op"] == "message"]
            assert extra == [], f"{label} got more than was sent: {extra[:3]}"
    finally:
        for client in sockets.values():
            await client.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_reconnect_with_since_recovers_exactly_what_was_missed(server: ServerProcess, kind: str) -> None:
    users = users_for(kind)
    channel = open_channel(server, kind, users)
    alice, bob = users[0], users[1]
    async with await connect(server, alice) as a:
        await subscribe(a, channel)
        b = await connect(server, bob)
        await subscribe(b, channel)
        first = post(server, alice, channel, ["before the disconnect"])
        assert await received_ids(b, channel, 1) == first
        last_seen = first[-1]
        await b.close()
        missed = post(server, alice, channel, [f"missed {i}" for i in range(5)])
        assert await received_ids(a, channel, 6) == first + missed  # the channel is live meanwhile
        b = await connect(server, bob)
        try:
            await subscribe(b, channel, since=last_seen)
            assert await received_ids(b, channel, 5) == missed
            live = await pipelined_sends(a, channel, ["live again"])
            assert await received_ids(b, channel, 1) == live
            assert [f for f in await b.drain_nothing(0.3) if f["op"] == "message"] == []
        finally:
            await b.close()


async def test_slow_reader_gets_resync_while_a_fast_reader_keeps_up(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.env.update(
        {
            # Room for the fast reader to lag a little while the test process is busy sending
            # (it reads in the same process), yet far less than the slow reader is sent.
            "CHAT_SEND_QUEUE": "256",
            "CHAT_RATE_PER_S": "1000000",
            "CHAT_RATE_BURST": "1000000",
            "CHAT_USER_SEND_PER_S": "1000000",  # one user floods on purpose
            "CHAT_USER_SEND_BURST": "1000000",
            "CHAT_REPLAY_CAP": "100000",
        }
    )
    # A flood of 2,000 messages into one room on purpose: hot-room protection would (rightly)
    # throttle it, so this node's dynamic settings never call a room hot.
    server.data_dir.mkdir(parents=True, exist_ok=True)
    (server.data_dir / "config.json").write_text(json.dumps({"hot_send_per_s": 1e6, "hot_fanout_per_s": 1e9}))
    server.start()
    alice, fast_user, slow_user = uid("alice"), uid("fast"), uid("slow")
    # A group, not a room: 2,000 messages in seconds would make a room hot, and hot-room
    # protection (batch frames, send limits) is tested on its own (test_hot_rooms.py).
    channel = open_channel(server, "group", [alice, fast_user, slow_user])
    total, senders, batch = 2000, 4, 50
    # Enough bytes to fill what the kernel buffers for the slow socket (the server's send
    # buffer grows up to tcp_wmem's maximum) several times over.
    text = "x" * min(100_000, max(4000, 2 * (_max_send_buffer() + 1024 * 1024) // total))

    # The slow reader stops reading at the TCP level: a tiny receive buffer, and the client
    # library stops reading from the socket once one frame is queued and not consumed.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    slow = await connect(server, slow_user, sock=raw, max_queue=1)
    fast = await connect(server, fast_user)
    await subscribe(slow, channel)
    await subscribe(fast, channel)

    fast_got: list[str] = []

    async def read_fast() -> None:
        while len(fast_got) < total:
            frame = await fast.recv(timeout=30)
            if frame["op"] == "message":
                fast_got.append(frame["message"]["id"])
            elif frame["op"] == "resync":
                pytest.fail(f"the fast reader was told to resync after {len(fast_got)} messages")

    async def send_share(client: WsClient, share: int, tag: int) -> list[str]:
        ids: list[str] = []
        for start in range(0, share, batch):
            ids += await pipelined_sends(client, channel, [f"{tag}:{start + i} {text}" for i in range(batch)])
        return ids

    reader = asyncio.create_task(read_fast())
    send_clients = [await connect(server, alice) for _ in range(senders)]
    try:
        shares = await asyncio.gather(*(send_share(c, total // senders, n) for n, c in enumerate(send_clients)))
        await asyncio.wait_for(reader, 30)
    finally:
        reader.cancel()
        for c in send_clients:
            await c.close()
    every = sorted((i for share in shares for i in share), key=int)
    assert len(every) == total
    # The fast reader got everything, once, in order, and was never told to resync (read_fast).
    assert fast_got == every

    # The slow reader resumes: what it gets is a prefix of the channel, then `resync`.
    before_resync: list[str] = []
    while True:
        frame = await slow.recv(timeout=15)
        if frame["op"] == "resync":
            assert frame["channel"] == channel
            break
        if frame["op"] == "presence":
            continue  # the other members' presence is pushed to the room's sockets too
        assert frame["op"] == "message", frame
        before_resync.append(frame["message"]["id"])
        if len(before_resync) == total:
            pytest.fail("the slow reader got every message live: the node buffered it all and never cut it off")
    assert 0 < len(before_resync) < total, "the slow reader was never cut off"
    assert before_resync == every[: len(before_resync)]
    # Recover the rest with subscribe + since: exactly the missing ones, no duplicates.
    await subscribe(slow, channel, since=before_resync[-1])
    rest = await received_ids(slow, channel, total - len(before_resync), timeout=30)
    assert_in_order_once(before_resync + rest, "slow reader")
    assert before_resync + rest == every
    assert [f for f in await slow.drain_nothing(0.3) if f["op"] == "message"] == []
    await slow.close()
    await fast.close()


async def test_one_socket_many_channels_keeps_per_channel_order_and_never_repeats(server: ServerProcess) -> None:
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    channels = {
        "group": open_channel(server, "group", [alice, bob, carol]),
        "room": open_channel(server, "room", [alice, bob, carol]),
        "dm": open_channel(server, "dm", [alice, bob]),
    }
    async with await connect(server, alice) as a, await connect(server, bob) as b, await connect(server, bob) as watcher:
        frame_id = await watcher.send("subscribe", channels=list(channels.values()))
        for channel in channels.values():
            await watcher.expect("subscribed", id=frame_id, channel=channel)
        # Each sender interleaves the three channels in one pipelined burst.
        work = [(channel, f"{kind} {i}") for i in range(15) for kind, channel in channels.items()]
        acked = await asyncio.gather(*(pipelined_to_many(client, work) for client in (a, b)))
        pairs = [pair for batch in acked for pair in batch]
        expected = {channel: sorted((i for c, i in pairs if c == channel), key=int) for channel in channels.values()}
        total = sum(len(v) for v in expected.values())
        got = await watcher.messages(total)
        ids = [m["id"] for m in got]
        assert len(set(ids)) == len(ids), "a message was delivered twice to one socket"
        for kind, channel in channels.items():
            assert [m["id"] for m in got if m["channel"] == channel] == expected[channel], f"{kind}: order or content"
        assert [f for f in await watcher.drain_nothing(0.3) if f["op"] == "message"] == []
