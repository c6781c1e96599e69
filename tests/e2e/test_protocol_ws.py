"""PROTOCOL.md, WebSocket section, row by row, against a real ``chat serve`` process.

Every test uses its own users and channels, so one module-scoped node serves them all;
tests that need special limits (replay cap, flooding) start a node of their own.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
import warnings
from typing import Any

import jwt
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chat.auth import issue_token
from chat.ids import EPOCH_MS, TIMESTAMP_SHIFT
from tests.support.client import WsClient
from tests.support.server import TEST_SECRET, ServerProcess

FRAME_CAP = int(1.25 * 1024 * 1024)  # PROTOCOL.md: frames up to 1.25 MiB are read


# Helpers


def uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def create_channel(server: ServerProcess, owner: str, members: tuple[str, ...] | list[str] = (), kind: str = "group") -> str:
    with server.http(owner) as http:
        r = http.post("/v1/channels", json={"kind": kind, "name": f"{kind} of {owner}", "members": list(members)})
    assert r.status_code == 201, r.text
    return r.json()["channel"]["id"]


def post_messages(server: ServerProcess, user: str, channel: str, texts: list[str]) -> list[dict[str, Any]]:
    out = []
    with server.http(user) as http:
        for text in texts:
            r = http.post(f"/v1/channels/{channel}/messages", json={"text": text, "client_msg_id": uid("c")})
            assert r.status_code == 201, r.text
            out.append(r.json()["message"])
    return out


async def connect(server: ServerProcess, user: str, **kwargs: Any) -> WsClient:
    return await WsClient.connect(server.ws_url, server.token(user), **kwargs)


async def subscribe(client: WsClient, *channels: str, since: dict[str, str] | None = None) -> None:
    fields: dict[str, Any] = {"channels": list(channels)}
    if since is not None:
        fields["since"] = since
    frame_id = await client.send("subscribe", **fields)
    for channel in channels:
        frame = await client.expect("subscribed", id=frame_id, channel=channel)
        assert frame["type"] == "subscribed"


async def ws_send(client: WsClient, channel: str, text: str, client_msg_id: str | None = None) -> dict[str, Any]:
    reply = await client.request("send", "ack", channel=channel, text=text, client_msg_id=client_msg_id or uid("c"))
    assert reply["op"] == "ack", reply
    return reply["message"]


async def frames_with_id(client: WsClient, frame_id: Any, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The next ``count`` frames answering request ``frame_id``, in arrival order."""
    out: list[dict[str, Any]] = []
    keep: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(out) < count:
        frame = await client.recv(max(0.01, deadline - loop.time()))
        (out if frame.get("id") == frame_id else keep).append(frame)
    client.backlog[:0] = keep
    return out


async def closed_code(client: WsClient, timeout: float = 10.0) -> tuple[int | None, list[dict[str, Any]]]:
    """Read until the server closes the socket; returns (close code, frames read meanwhile)."""
    frames = list(client.backlog)
    client.backlog.clear()
    try:
        async with asyncio.timeout(timeout):
            while True:
                frames.append(orjson.loads(await client.conn.recv()))
    except ConnectionClosed as closed:
        return (closed.rcvd.code if closed.rcvd else None), frames


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


# hello


async def test_hello_carries_node_session_user_and_heartbeat_interval(server: ServerProcess) -> None:
    user = uid("hello")
    a = await connect(server, user)
    b = await connect(server, user)
    try:
        for client in (a, b):
            hello = client.hello
            assert hello["op"] == hello["type"] == "hello"
            assert hello["node_id"] == server.env["CHAT_NODE_ID"]
            assert hello["user"] == user
            assert isinstance(hello["session_id"], str) and hello["session_id"]
            assert isinstance(hello["heartbeat_interval_ms"], int) and hello["heartbeat_interval_ms"] > 0
        assert a.hello["session_id"] != b.hello["session_id"]
    finally:
        await a.close()
        await b.close()


# subscribe


async def test_subscribe_answers_each_channel_in_the_order_given(server: ServerProcess) -> None:
    me, other = uid("sub"), uid("other")
    first = create_channel(server, me)
    theirs = create_channel(server, other)
    second = create_channel(server, me, kind="room")
    async with await connect(server, me) as client:
        frame_id = await client.send("subscribe", channels=[first, "123456789", theirs, second, "not-a-channel"])
        frames = await frames_with_id(client, frame_id, 5)
    got = [(f["op"], f["channel"], f.get("code")) for f in frames]
    assert got == [
        ("subscribed", first, None),
        ("error", "123456789", "not_found"),
        ("error", theirs, "forbidden"),
        ("subscribed", second, None),
        ("error", "not-a-channel", "not_found"),
    ]
    assert all(f["type"] == f["op"] for f in frames)
    assert all(isinstance(f["message"], str) and f["message"] for f in frames if f["op"] == "error")


async def test_subscribed_channel_delivers_live_messages_including_own(server: ServerProcess) -> None:
    alice, bob = uid("alice"), uid("bob")
    channel = create_channel(server, alice, [bob])
    async with await connect(server, alice) as a, await connect(server, bob) as b:
        await subscribe(a, channel)
        await subscribe(b, channel)
        sent = await ws_send(a, channel, "hello bob")
        for client in (a, b):
            frame = await client.expect("message")
            assert frame["type"] == "message"
            assert frame["message"] == sent


async def test_subscribe_since_replays_stored_messages_in_id_order_then_live(server: ServerProcess) -> None:
    alice, bob = uid("alice"), uid("bob")
    channel = create_channel(server, alice, [bob])
    stored = post_messages(server, alice, channel, [f"m{i}" for i in range(6)])
    async with await connect(server, bob) as b:
        frame_id = await b.send("subscribe", channels=[channel], since={channel: stored[1]["id"]})
        first = await b.recv()  # the reply comes before the replay
        assert first["op"] == "subscribed" and first["id"] == frame_id and first["channel"] == channel
        replayed = await b.messages(4)
        assert replayed == stored[2:]
        live = post_messages(server, alice, channel, ["live"])
        assert await b.messages(1) == live
        assert [f for f in await b.drain_nothing(0.3) if f["op"] == "message"] == []


async def test_subscribe_since_on_several_channels_replays_each_right_after_its_reply(server: ServerProcess) -> None:
    alice = uid("alice")
    first, second = create_channel(server, alice), create_channel(server, alice, kind="room")
    one = post_messages(server, alice, first, ["1a", "1b", "1c"])
    two = post_messages(server, alice, second, ["2a", "2b"])
    async with await connect(server, alice) as a:
        await a.send("subscribe", channels=[first, second], since={first: one[0]["id"], second: two[0]["id"]})
        frames = [await a.recv() for _ in range(5)]
    assert [(f["op"], f.get("channel") or f["message"]["text"]) for f in frames] == [
        ("subscribed", first),
        ("message", "1b"),
        ("message", "1c"),
        ("subscribed", second),
        ("message", "2b"),
    ]


async def test_subscribe_since_seam_has_no_gap_and_no_duplicate(server: ServerProcess) -> None:
    """Messages are being sent (on another socket) while a subscriber joins with ``since``:
    it must get every message after ``since`` exactly once, in ID order."""
    alice, bob = uid("alice"), uid("bob")
    channel = create_channel(server, alice, [bob])
    async with await connect(server, alice) as sender:
        since = (await ws_send(sender, channel, "before everything"))["id"]
        every: list[str] = []
        for round_no in range(4):
            async with await connect(server, bob) as b:
                n = 40
                ids = []
                for i in range(n):  # pipelined: the node is still storing these while bob subscribes
                    ids.append(await sender.send("send", channel=channel, text=f"r{round_no}-{i}", client_msg_id=f"r{round_no}-{i}"))
                await b.send("subscribe", channels=[channel], since={channel: since})
                acks = [await sender.expect("ack", id=i) for i in ids]
                every += [a["message"]["id"] for a in acks]
                got: list[str] = []
                while not got or got[-1] != every[-1]:
                    got.append((await b.expect("message"))["message"]["id"])
                assert got == every, f"round {round_no}: gap, duplicate or disorder at the seam"
                assert [f for f in await b.drain_nothing(0.3) if f["op"] == "message"] == []
            # Next round replays from somewhere in the middle of what exists.
            since = every[len(every) // 2]
            every = every[len(every) // 2 + 1 :]


async def test_replay_is_capped_then_resync_then_history_after_pages_on(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.env["CHAT_REPLAY_CAP"] = "5"
    server.start()
    alice, bob = uid("alice"), uid("bob")
    channel = create_channel(server, alice, [bob])
    stored = post_messages(server, alice, channel, [f"m{i}" for i in range(8)])
    async with await connect(server, bob) as b:
        frame_id = await b.send("subscribe", channels=[channel], since={channel: stored[0]["id"]})  # 7 newer exist
        frames = [await b.recv() for _ in range(7)]
        assert frames[0]["op"] == "subscribed" and frames[0]["id"] == frame_id
        assert [f["op"] for f in frames[1:6]] == ["message"] * 5
        assert [f["message"] for f in frames[1:6]] == stored[1:6]
        assert frames[6]["op"] == "resync" and frames[6]["channel"] == channel
        page = await b.request("history", "history", channel=channel, after=stored[5]["id"])
        assert page["messages"] == stored[6:] and page["has_more"] is False
        # Live delivery goes on after the resync.
        live = post_messages(server, alice, channel, ["live"])
        assert await b.messages(1) == live
        assert [f for f in await b.drain_nothing(0.3) if f["op"] == "message"] == []


# unsubscribe


async def test_unsubscribe_replies_and_stops_delivery(server: ServerProcess) -> None:
    alice, bob = uid("alice"), uid("bob")
    channel = create_channel(server, alice, [bob])
    async with await connect(server, alice) as a, await connect(server, bob) as b:
        await subscribe(a, channel)
        await subscribe(b, channel)
        reply = await b.request("unsubscribe", channels=[channel])
        assert reply["op"] == reply["type"] == "unsubscribed"
        sent = await ws_send(a, channel, "after bob left")
        assert (await a.expect("message"))["message"] == sent  # delivered to those still subscribed...
        assert [f for f in await b.drain_nothing(0.3) if f["op"] == "message"] == []  # ...not to bob


# send


async def test_send_acks_the_stored_message(server: ServerProcess) -> None:
    alice, bob = uid("alice"), uid("bob")
    channel = create_channel(server, alice, [bob])
    async with await connect(server, alice) as a:
        before_ms = int(time.time() * 1000)
        reply = await a.request("send", channel=channel, text="héllo 🌍", client_msg_id="c-1", id=4242)
        assert reply["op"] == reply["type"] == "ack" and reply["id"] == 4242
        message = reply["message"]
        assert set(message) >= {"id", "channel", "sender", "text", "ts", "client_msg_id"}
        assert isinstance(message["id"], str) and message["id"].isdigit()
        assert message["channel"] == channel and message["sender"] == alice
        assert message["text"] == "héllo 🌍" and message["client_msg_id"] == "c-1"
        assert message["ts"] == (int(message["id"]) >> TIMESTAMP_SHIFT) + EPOCH_MS
        assert before_ms - 1000 <= message["ts"] <= int(time.time() * 1000) + 1000
    # Acked means stored: another member reads it back at once.
    with server.http(bob) as http:
        page = http.get(f"/v1/channels/{channel}/messages").json()
    assert page["messages"] == [message]


async def test_send_retry_with_same_client_msg_id_returns_original_and_delivers_nothing(server: ServerProcess) -> None:
    alice, bob = uid("alice"), uid("bob")
    channel = create_channel(server, alice, [bob])
    other_channel = create_channel(server, alice, [bob])
    async with await connect(server, alice) as a, await connect(server, bob) as b:
        await subscribe(b, channel)
        original = await ws_send(a, channel, "first text", "dup-1")
        assert (await b.expect("message"))["message"] == original
        retry = await ws_send(a, channel, "a different text", "dup-1")
        assert retry == original
        assert [f for f in await b.drain_nothing(0.3) if f["op"] == "message"] == []
        # The key is (channel, sender, client_msg_id): another sender or channel is a new message.
        by_bob = await ws_send(b, channel, "bob's", "dup-1")
        assert by_bob["id"] != original["id"] and by_bob["sender"] == bob
        elsewhere = await ws_send(a, other_channel, "elsewhere", "dup-1")
        assert elsewhere["id"] not in (original["id"], by_bob["id"])
    with server.http(alice) as http:
        # The key does not depend on the transport: an HTTP retry finds the WebSocket original.
        r = http.post(f"/v1/channels/{channel}/messages", json={"text": "via http", "client_msg_id": "dup-1"})
        assert r.status_code == 200 and r.json()["message"] == original
        texts = [m["text"] for m in http.get(f"/v1/channels/{channel}/messages").json()["messages"]]
    assert texts == ["first text", "bob's"]


# history


async def test_history_paging_rules(server: ServerProcess) -> None:
    alice = uid("alice")
    channel = create_channel(server, alice)
    m = post_messages(server, alice, channel, [f"m{i}" for i in range(7)])
    ids = [x["id"] for x in m]

    async with await connect(server, alice) as a:

        async def page(**fields: Any) -> tuple[list[str], bool]:
            reply = await a.request("history", channel=channel, **fields)
            assert reply["op"] == reply["type"] == "history", reply
            got = [x["id"] for x in reply["messages"]]
            assert got == sorted(got, key=int), "history must be ascending by ID"
            return got, reply["has_more"]

        # No cursor: the newest `limit`; has_more = older ones exist.
        assert await page() == (ids, False)  # default limit 50
        assert await page(limit=3) == (ids[4:], True)
        assert await page(limit=7) == (ids, False)
        assert await page(limit=200) == (ids, False)
        assert await page(limit=1) == (ids[6:], True)
        # before: the `limit` just before it; has_more = older ones exist.
        assert await page(before=ids[4], limit=2) == (ids[2:4], True)
        assert await page(before=ids[2], limit=2) == (ids[0:2], False)
        assert await page(before=ids[0]) == ([], False)
        # after: the `limit` just after it; has_more = newer ones exist.
        assert await page(after=ids[1], limit=2) == (ids[2:4], True)
        assert await page(after=ids[4], limit=2) == (ids[5:7], False)
        assert await page(after=ids[6]) == ([], False)
        # Both: strictly between, starting just after `after`.
        assert await page(after=ids[1], before=ids[5], limit=2) == (ids[2:4], True)
        got, _ = await page(after=ids[1], before=ids[5], limit=10)
        assert got == ids[2:5]
        assert (await page(after=ids[1], before=ids[2]))[0] == []
        for bad in (0, 201, -1, "x", "10", 1.5, True):
            reply = await a.request("history", channel=channel, limit=bad)
            assert reply["op"] == "error" and reply["code"] == "bad_request", (bad, reply)


# heartbeat, typing, read, presence


async def test_heartbeat_is_acked_with_the_request_id(server: ServerProcess) -> None:
    async with await connect(server, uid("hb")) as a:
        for frame_id in ("hb-1", 7, 2.5):
            reply = await a.request("heartbeat", id=frame_id)
            assert reply == {"op": "heartbeat_ack", "type": "heartbeat_ack", "id": frame_id}
        # No id: the reply has none either. Unknown fields are ignored.
        await a.send_raw('{"op": "heartbeat", "some_future_field": {"x": [1, 2]}}')
        assert await a.expect("heartbeat_ack") == {"op": "heartbeat_ack", "type": "heartbeat_ack"}


async def test_unknown_fields_are_ignored(server: ServerProcess) -> None:
    me = uid("fwd")
    channel = create_channel(server, me)
    async with await connect(server, me) as a:
        reply = await a.request("subscribe", channels=[channel], priority="high", since=None)
        assert reply["op"] == "subscribed"
        ack = await a.request("send", channel=channel, text="hi", client_msg_id="c", format="markdown", reply_to=None)
        assert ack["op"] == "ack" and ack["message"]["text"] == "hi"
        page = await a.request("history", channel=channel, cursor="ignored")
        assert page["op"] == "history" and [m["id"] for m in page["messages"]] == [ack["message"]["id"]]


async def test_typing_reaches_other_subscribed_members(server: ServerProcess) -> None:
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    channel = create_channel(server, alice, [bob, carol])
    async with await connect(server, alice) as a, await connect(server, bob) as b, await connect(server, carol) as c:
        await subscribe(a, channel)
        await subscribe(b, channel)  # carol is a member but not subscribed
        await a.send("typing", channel=channel)
        frame = await b.expect("typing")
        assert frame["type"] == "typing" and frame["channel"] == channel and frame["user"] == alice
        assert [f for f in await c.drain_nothing(0.3) if f["op"] == "typing"] == []
        # Typing is refused like any other use of a channel one is not a member of.
        outsider = create_channel(server, carol)
        reply = await a.request("typing", channel=outsider)
        assert reply["op"] == "error" and reply["code"] == "forbidden"


async def test_read_marker_goes_to_the_readers_other_devices_only(server: ServerProcess) -> None:
    alice, bob = uid("alice"), uid("bob")
    channel = create_channel(server, alice, [bob])
    [message] = post_messages(server, bob, channel, ["read me"])
    async with await connect(server, alice) as phone, await connect(server, alice) as laptop, await connect(server, bob) as b:
        await subscribe(phone, channel)
        await subscribe(laptop, channel)
        await subscribe(b, channel)
        await phone.send("read", channel=channel, message_id=message["id"])
        frame = await laptop.expect("read")
        assert frame["type"] == "read" and frame["channel"] == channel and frame["message_id"] == message["id"]
        # Not echoed to the reading device, not sent to other users.
        assert [f for f in await phone.drain_nothing(0.3) if f["op"] == "read"] == []
        assert [f for f in await b.drain_nothing(0.1) if f["op"] == "read"] == []


async def test_presence_reports_online_and_offline_with_last_seen(server: ServerProcess) -> None:
    alice, bob, nobody = uid("alice"), uid("bob"), uid("nobody")
    async with await connect(server, alice) as a:
        b = await connect(server, bob)
        reply = await a.request("presence", users=[alice, bob, nobody])
        assert reply["op"] == reply["type"] == "presence"
        users = reply["users"]
        assert set(users) == {alice, bob, nobody}
        for user in (alice, bob):
            assert users[user]["status"] == "online"
            assert isinstance(users[user]["last_seen"], int) and users[user]["last_seen"] > EPOCH_MS
        assert users[nobody]["status"] == "offline"
        await b.close()
        # The node notices the disconnect asynchronously: ask until it shows (bounded).
        for _ in range(150):  # (well inside the socket's rate-limit burst)
            state = (await a.request("presence", users=[bob]))["users"][bob]
            if state["status"] == "offline":
                break
        assert state["status"] == "offline"
        assert isinstance(state["last_seen"], int) and state["last_seen"] >= users[bob]["last_seen"]


# Bad input: one socket, every refusal answered, the socket stays usable.


async def test_bad_frames_get_error_codes_and_the_socket_stays_usable(server: ServerProcess) -> None:
    me, other = uid("bad"), uid("other")
    mine = create_channel(server, me)
    theirs = create_channel(server, other)
    [message] = post_messages(server, me, mine, ["x"])
    max_text = "a" * 100_000

    def frame(name: str | None, **fields: Any) -> str:
        body: dict[str, Any] = {"id": "q"} if name is None else {"op": name, "id": "q"}
        body.update(fields)
        return orjson.dumps(body).decode()

    send_ok = {"channel": mine, "text": "hi", "client_msg_id": "c"}
    rows: list[tuple[str, str | bytes, str, bool]] = [
        # (label, raw frame, expected code, whether the reply echoes id "q")
        ("invalid JSON", "{not json", "bad_request", False),
        ("binary garbage", b"\xff\xfe", "bad_request", False),
        ("JSON array", "[1, 2]", "bad_request", False),
        ("JSON string", '"subscribe"', "bad_request", False),
        ("JSON null", "null", "bad_request", False),
        ("missing op", frame(None), "bad_request", True),
        ("op not a string", frame(None, op=5), "bad_request", True),
        ("unknown op", frame("launch"), "bad_request", True),
        ("id is an object", '{"op": "heartbeat", "id": {"a": 1}}', "bad_request", False),
        ("id is a list", '{"op": "heartbeat", "id": [1]}', "bad_request", False),
        ("id is a boolean", '{"op": "heartbeat", "id": true}', "bad_request", False),
        ("send without text", frame("send", channel=mine, client_msg_id="c"), "bad_request", True),
        ("send with empty text", frame("send", **{**send_ok, "text": ""}), "bad_request", True),
        ("send with numeric text", frame("send", **{**send_ok, "text": 5}), "bad_request", True),
        ("send with null text", frame("send", **{**send_ok, "text": None}), "bad_request", True),
        ("send with list text", frame("send", **{**send_ok, "text": ["hi"]}), "bad_request", True),
        ("text of 100,001 characters", frame("send", **{**send_ok, "text": max_text + "a"}), "too_large", True),
        ("send without client_msg_id", frame("send", channel=mine, text="hi"), "bad_request", True),
        ("empty client_msg_id", frame("send", **{**send_ok, "client_msg_id": ""}), "bad_request", True),
        ("65-char client_msg_id", frame("send", **{**send_ok, "client_msg_id": "c" * 65}), "bad_request", True),
        ("numeric client_msg_id", frame("send", **{**send_ok, "client_msg_id": 7}), "bad_request", True),
        ("send without channel", frame("send", text="hi", client_msg_id="c"), "bad_request", True),
        ("channel is a list", frame("send", **{**send_ok, "channel": [mine]}), "bad_request", True),
        ("channel is an object", frame("send", **{**send_ok, "channel": {"id": mine}}), "bad_request", True),
        ("channel is a boolean", frame("send", **{**send_ok, "channel": True}), "bad_request", True),
        ("nonexistent channel", frame("send", **{**send_ok, "channel": "987654321"}), "not_found", True),
        ("channel that is no ID", frame("send", **{**send_ok, "channel": "general"}), "not_found", True),
        ("not a member (send)", frame("send", **{**send_ok, "channel": theirs}), "forbidden", True),
        ("not a member (history)", frame("history", channel=theirs), "forbidden", True),
        ("nonexistent channel (history)", frame("history", channel="987654321"), "not_found", True),
        ("subscribe without channels", frame("subscribe"), "bad_request", True),
        ("subscribe channels not a list", frame("subscribe", channels=mine), "bad_request", True),
        ("subscribe empty channels", frame("subscribe", channels=[]), "bad_request", True),
        ("subscribe channel of wrong type", frame("subscribe", channels=[{"id": mine}]), "bad_request", True),
        ("since not an object", frame("subscribe", channels=[mine], since=[mine]), "bad_request", True),
        ("since value not an ID", frame("subscribe", channels=[mine], since={mine: "latest"}), "bad_request", True),
        ("since value negative", frame("subscribe", channels=[mine], since={mine: "-1"}), "bad_request", True),
        ("since value null", frame("subscribe", channels=[mine], since={mine: None}), "bad_request", True),
        ("since value huge", frame("subscribe", channels=[mine], since={mine: "9" * 30}), "bad_request", True),
        ("unsubscribe without channels", frame("unsubscribe"), "bad_request", True),
        ("history limit 0", frame("history", channel=mine, limit=0), "bad_request", True),
        ("history limit 201", frame("history", channel=mine, limit=201), "bad_request", True),
        ("history limit 'x'", frame("history", channel=mine, limit="x"), "bad_request", True),
        ("history before not an ID", frame("history", channel=mine, before="yesterday"), "bad_request", True),
        ("history after not an ID", frame("history", channel=mine, after=[1]), "bad_request", True),
        ("typing without channel", frame("typing"), "bad_request", True),
        ("typing nonexistent channel", frame("typing", channel="987654321"), "not_found", True),
        ("read without message_id", frame("read", channel=mine), "bad_request", True),
        ("read with bad message_id", frame("read", channel=mine, message_id="last"), "bad_request", True),
        ("read with object message_id", frame("read", channel=mine, message_id={}), "bad_request", True),
        ("read not a member", frame("read", channel=theirs, message_id=message["id"]), "forbidden", True),
        ("presence without users", frame("presence"), "bad_request", True),
        ("presence users not a list", frame("presence", users=me), "bad_request", True),
        ("presence users of wrong type", frame("presence", users=[1, 2]), "bad_request", True),
        ("presence invalid user id", frame("presence", users=["no spaces allowed"]), "bad_request", True),
    ]
    async with await connect(server, me) as client:
        for n, (label, raw, code, echoes_id) in enumerate(rows):
            await client.send_raw(raw)
            reply = await client.expect("error")
            assert reply["code"] == code, f"{label}: {reply}"
            assert reply["type"] == "error" and isinstance(reply["message"], str) and reply["message"], label
            if echoes_id:
                assert reply.get("id") == "q", f"{label}: id not echoed: {reply}"
            ack = await client.request("heartbeat", id=f"alive-{n}")
            assert ack["op"] == "heartbeat_ack", f"socket unusable after {label}: {ack}"
        # Exactly 100,000 characters is accepted, even with every character JSON-escaped.
        ok = await client.request("send", channel=mine, text=max_text, client_msg_id="max-ascii")
        assert ok["op"] == "ack" and len(ok["message"]["text"]) == 100_000
        emoji = "\\ud83d\\ude00" * 100_000
        escaped = f'{{"op":"send","id":"esc","channel":"{mine}","client_msg_id":"max-escaped","text":"{emoji}"}}'
        assert len(escaped.encode()) <= FRAME_CAP
        await client.send_raw(escaped)
        ok = await client.expect("ack", id="esc")
        assert ok["message"]["text"] == "😀" * 100_000
        # A frame of exactly the cap is read.
        pad = '{"op":"heartbeat","id":"cap","pad":"'
        exact = pad + "x" * (FRAME_CAP - len(pad) - 2) + '"}'
        assert len(exact.encode()) == FRAME_CAP
        await client.send_raw(exact)
        assert (await client.expect("heartbeat_ack", id="cap"))["id"] == "cap"
        # Only the error frames above were sent: no stray replies are left over.
        assert [f for f in await client.drain_nothing(0.3) if f["op"] not in ("message",)] == []


async def test_frame_over_the_cap_closes_with_1009(server: ServerProcess) -> None:
    client = await connect(server, uid("big"))
    await client.send_raw('{"op":"heartbeat","pad":"' + "x" * FRAME_CAP + '"}')
    code, frames = await closed_code(client)
    assert code == 1009
    assert [f for f in frames if f["op"] == "heartbeat_ack"] == []


async def test_repeated_too_large_messages_close_with_1009(server: ServerProcess) -> None:
    me = uid("big")
    channel = create_channel(server, me)
    client = await connect(server, me)
    strikes = 3  # CHAT_OVERSIZE_STRIKES default
    for i in range(strikes - 1):
        reply = await client.request("send", channel=channel, text="a" * 100_001, client_msg_id=f"c{i}")
        assert reply["code"] == "too_large"
    assert (await client.request("heartbeat"))["op"] == "heartbeat_ack"  # still open before the last strike
    last = await client.send("send", channel=channel, text="a" * 100_001, client_msg_id="last")
    code, frames = await closed_code(client)
    assert code == 1009
    # The refusal that tipped it over still reaches the client before the close.
    assert [(f["op"], f.get("id"), f.get("code")) for f in frames] == [("error", last, "too_large")]
    with server.http(me) as http:
        assert http.get(f"/v1/channels/{channel}/messages").json()["messages"] == []


async def test_flooding_gets_rate_limited_then_closed_with_1008(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.env.update({"CHAT_RATE_PER_S": "1", "CHAT_RATE_BURST": "5", "CHAT_FLOOD_STRIKES": "4"})
    server.start()
    client = await connect(server, uid("flood"))
    for i in range(30):
        try:
            await client.send("heartbeat", id=f"h{i}")
        except ConnectionClosed:
            break
    code, frames = await closed_code(client)
    assert code == 1008
    acks = [f for f in frames if f["op"] == "heartbeat_ack"]
    limited = [f for f in frames if f["op"] == "error"]
    assert [f["id"] for f in acks] == [f"h{i}" for i in range(len(acks))]
    assert 5 <= len(acks) <= 6  # the burst (plus at most one token refilled meanwhile)
    # Refused frames 1-3 in a row are answered (and reach the client before the close); the 4th closes.
    assert len(limited) == 3, frames
    for f in limited:
        assert f["code"] == "rate_limited"
        assert isinstance(f["retry_after_ms"], int) and f["retry_after_ms"] > 0
    # The node itself is fine: a new socket works.
    async with await connect(server, uid("calm")) as calm:
        assert (await calm.request("heartbeat"))["op"] == "heartbeat_ack"


# Authentication of the handshake


def _bad_tokens(server: ServerProcess) -> dict[str, str | None]:
    settings = server.settings()
    now = int(time.time())
    good = {"sub": "mallory", "aud": "chat", "exp": now + 600}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyjwt warns that the test secret is short for HS512
        hs512 = jwt.encode(good, TEST_SECRET, algorithm="HS512")
    return {
        "missing": None,
        "empty": "",
        "garbage": "not.a.jwt",
        # Expired 61 s ago: past any leeway the protocol allows (at most 60 s).
        "expired": issue_token(settings, "mallory", now=now - 121, ttl_s=60),
        "wrong audience": jwt.encode({**good, "aud": "not-chat"}, TEST_SECRET, algorithm="HS256"),
        "no audience": jwt.encode({"sub": "mallory", "exp": now + 600}, TEST_SECRET, algorithm="HS256"),
        "no exp": jwt.encode({"sub": "mallory", "aud": "chat"}, TEST_SECRET, algorithm="HS256"),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(good)}.",
        "alg not allowed": hs512,
        "bad signature": jwt.encode(good, "another-secret-" + "y" * 40, algorithm="HS256"),
        "invalid subject": jwt.encode({**good, "sub": "not a user id"}, TEST_SECRET, algorithm="HS256"),
    }


async def test_bad_tokens_are_refused_at_the_handshake_with_401(server: ServerProcess) -> None:
    for label, token in _bad_tokens(server).items():
        for via_header in (False, True):
            if token is None and via_header:
                continue
            url = server.ws_url if token is None else (server.ws_url if via_header else f"{server.ws_url}?token={token}")
            headers = {"Authorization": f"Bearer {token}"} if via_header else None
            with pytest.raises(InvalidStatus) as refused:
                conn = await websockets.connect(url, additional_headers=headers, open_timeout=10)
                await conn.close()
            assert refused.value.response.status_code == 401, f"{label} (header={via_header})"


async def test_authorization_header_works_instead_of_query_token(server: ServerProcess) -> None:
    user = uid("hdr")
    channel = create_channel(server, user)
    async with await WsClient.connect(server.ws_url, server.token(user), via_header=True) as client:
        assert client.hello["user"] == user
        await subscribe(client, channel)
        sent = await ws_send(client, channel, "via header")
        assert (await client.expect("message"))["message"] == sent


async def test_public_key_algorithm_from_configuration(fresh_server: ServerProcess) -> None:
    """Production with an EdDSA public key: its tokens are accepted, HS256 ones are refused."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    server = fresh_server
    server.env.update({"CHAT_ENV": "production", "CHAT_JWT_SECRET": "", "CHAT_JWT_ALGORITHMS": "EdDSA", "CHAT_JWT_PUBLIC_KEY": public_pem})
    server.start()
    claims = {"sub": "erin", "aud": "chat", "exp": int(time.time()) + 600}
    good = jwt.encode(claims, private, algorithm="EdDSA")
    async with await WsClient.connect(server.ws_url, good) as client:
        assert client.hello["user"] == "erin"
    with server.http(token=good) as http:
        assert http.get("/v1/connect").status_code == 200
    refused = {
        "HS256 with the old secret": jwt.encode(claims, TEST_SECRET, algorithm="HS256"),
        "other key": jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA"),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.",
    }
    for label, token in refused.items():
        with pytest.raises(InvalidStatus) as denied:
            conn = await websockets.connect(f"{server.ws_url}?token={token}", open_timeout=10)
            await conn.close()
        assert denied.value.response.status_code == 401, label


async def test_users_added_by_others_hear_joined_and_read_positions_are_listed(server: ServerProcess) -> None:
    owner, guest, third = uid("own"), uid("gst"), uid("thr")
    async with await WsClient.connect(server.ws_url, server.token(guest)) as c:
        with server.http(owner) as http:
            dm = http.post("/v1/dms", json={"user": guest}).json()["channel"]["id"]
            joined = await c.expect("joined")
            assert joined["channel"]["id"] == dm and joined["channel"]["kind"] == "dm"
            group = http.post("/v1/channels", json={"kind": "group", "name": "g", "members": [guest]}).json()["channel"]["id"]
            assert (await c.expect("joined"))["channel"]["id"] == group
            room = http.post("/v1/channels", json={"kind": "room", "name": "r"}).json()["channel"]["id"]
            assert http.post(f"/v1/channels/{room}/members", json={"user": guest}).status_code == 200
            assert (await c.expect("joined"))["channel"]["id"] == room
            msg = http.post(f"/v1/channels/{group}/messages", json={"text": "x", "client_msg_id": "j1"}).json()["message"]
        with server.http(third) as http:
            assert http.post(f"/v1/channels/{room}/members", json={}).status_code == 200  # joining yourself: no frame to anyone
        await c.send("read", channel=group, message_id=msg["id"])
        assert (await c.request("heartbeat"))["op"] == "heartbeat_ack"  # the read was handled before this reply
        assert not [f for f in await c.drain_nothing() if f.get("op") == "joined"]
    with server.http(guest) as http:
        listed = {ch["id"]: ch["last_read"] for ch in http.get("/v1/channels").json()["channels"]}
    assert listed == {dm: None, group: msg["id"], room: None}
