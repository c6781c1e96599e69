"""``GET /metrics`` in process: it parses with prometheus-client's own parser, its counters move
as a scripted session sends, subscribes and is refused, no label names a channel or a user, and
only the scraper (its token), an admin or — in development — this machine may read it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient, WebSocketDenialResponse

from chat import protocol
from chat.app import create_app
from chat.config import from_env
from chat.metrics.collector import COMMAND_OPS
from chat.metrics.counters import Histogram
from chat.metrics.looplag import LoopLag
from tests.unit.conftest import SECRET, Node, make_node

SCRAPE_TOKEN = "scrape-" + "s" * 40
# Every label a chat_* family may carry, and the fixed values of each bounded one.
# Each from a fixed set in the code (hot-room events, queues, breakers and their states included).
ALLOWED_LABELS = {"op", "code", "transport", "reason", "node_id", "version", "le", "state", "event", "queue", "breaker"}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield from make_node(tmp_path, CHAT_METRICS_TOKEN=SCRAPE_TOKEN, CHAT_RATE_BURST="5", CHAT_RATE_PER_S="0.1", CHAT_FLOOD_STRIKES="1000")


def scrape(node: Node) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus-client: (name, labels) → value."""
    r = node.client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def next_frame(ws: Any) -> dict[str, Any]:
    """The socket's next frame other than a presence push (members of a small group get each
    other's, in an order the test does not control)."""
    while True:
        frame: dict[str, Any] = ws.receive_json()
        if frame["op"] != "presence":
            return frame


def test_metrics_parse_and_every_family_has_a_type_and_help(node: Node) -> None:
    r = node.client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    expected = {
        "chat_ws_connections": "gauge",
        "chat_ws_handshakes_refused": "counter",
        "chat_ws_frames_in": "counter",
        "chat_ws_frames_out": "counter",
        "chat_messages_stored": "counter",
        "chat_fanout_deliveries": "counter",
        "chat_resyncs": "counter",
        "chat_send_ack_seconds": "histogram",
        "chat_store_write_seconds": "histogram",
        "chat_relay_publish_failures": "counter",
        "chat_relay_gaps_owed": "gauge",
        "chat_presence_transitions": "counter",
        "chat_presence_pending": "gauge",
        "chat_errors": "counter",
        "chat_ws_outbox_frames": "gauge",
        "chat_event_loop_lag_seconds": "histogram",
        "process_open_fds": "gauge",
        "chat_hot_rooms": "gauge",
        "chat_hot_rooms_pinned": "gauge",
        "chat_hot_events": "counter",
        "chat_storage_queue": "gauge",
        "chat_breaker_state": "gauge",
        "chat_breaker_refused": "counter",
    }
    for name, kind in expected.items():
        assert families[name].type == kind, name
    for family in families.values():
        assert family.documentation, family.name
    # An embedded node guards no backend: no breaker series, but the families are declared.
    assert not families["chat_breaker_state"].samples


def test_counters_move_as_a_session_sends_subscribes_and_is_refused(node: Node) -> None:
    channel = node.channel("alice", ["bob"])
    stranger_channel = node.channel("carol")
    before = scrape(node)
    connect = node.client.websocket_connect
    with connect(f"/v1/ws?token={node.token('alice')}") as alice, connect(f"/v1/ws?token={node.token('bob')}") as bob:
        for ws in (alice, bob):
            ws.receive_json()  # hello
            ws.send_text(orjson.dumps({"op": "subscribe", "id": 1, "channels": [channel]}).decode())
            assert next_frame(ws)["op"] == "subscribed"
        alice.send_text(orjson.dumps({"op": "send", "id": 2, "channel": channel, "text": "hi", "client_msg_id": "m1"}).decode())
        assert {next_frame(alice)["op"], next_frame(alice)["op"]} == {"ack", "message"}
        assert next_frame(bob)["op"] == "message"
        # Refused: not a member, then not even JSON.
        alice.send_text(orjson.dumps({"op": "send", "id": 3, "channel": stranger_channel, "text": "x", "client_msg_id": "m2"}).decode())
        assert next_frame(alice)["code"] == "forbidden"
        alice.send_text("not json")
        assert next_frame(alice)["code"] == "bad_request"
        # Rate-limited: the bucket holds 5 and refills at 0.1/s; 4 frames are already spent.
        codes = []
        for i in range(3):
            alice.send_text(orjson.dumps({"op": "heartbeat", "id": 10 + i}).decode())
            codes.append(next_frame(alice).get("code"))
        assert codes[-1] == "rate_limited", codes
        during = scrape(node)
    with pytest.raises(WebSocketDenialResponse) as denied, node.client.websocket_connect("/v1/ws?token=not-a-token"):
        pass
    assert denied.value.status_code == 401
    after = scrape(node)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(during, "chat_ws_connections") == 2 and value(after, "chat_ws_connections") == 0
    assert moved("chat_ws_connections_opened_total") == 2
    assert moved("chat_ws_frames_in_total", op="subscribe") == 2
    assert moved("chat_ws_frames_in_total", op="send") == 2
    assert moved("chat_ws_frames_in_total", op="heartbeat") >= 1
    assert moved("chat_ws_frames_in_total", op="unparsed") >= 2  # not JSON, and the rate-limited one
    assert moved("chat_messages_stored_total") == 1
    assert moved("chat_fanout_deliveries_total") == 2  # alice's own socket and bob's
    assert moved("chat_ws_frames_out_total", op="ack") == 1
    assert moved("chat_ws_frames_out_total", op="hello") == 2
    assert moved("chat_ws_frames_out_total", op="message") == 2
    assert moved("chat_errors_total", transport="ws", code="forbidden") == 1
    assert moved("chat_errors_total", transport="ws", code="bad_request") == 1
    assert moved("chat_errors_total", transport="ws", code="rate_limited") >= 1
    assert moved("chat_ws_handshakes_refused_total", reason="unauthorized") == 1
    assert moved("chat_send_ack_seconds_count") == 1 and moved("chat_store_write_seconds_count") == 1
    assert moved("chat_relay_publish_seconds_count") == 1
    assert 0 < moved("chat_send_ack_seconds_sum") < 5


def test_http_refusals_are_counted_by_code(node: Node) -> None:
    before = scrape(node)
    assert node.call("GET", "/v1/channels").status_code == 401
    assert node.call("GET", "/v1/channels/123", "alice").status_code == 404
    after = scrape(node)
    for code in ("unauthorized", "not_found"):
        assert value(after, "chat_errors_total", transport="http", code=code) - value(before, "chat_errors_total", transport="http", code=code) == 1


def test_a_hot_rooms_throttled_sends_are_counted(node: Node) -> None:
    """A pinned room over its send limit refuses with throttled: the refusal, the protection's
    event, the room's heat and its throttled state all show on /metrics."""
    admin = {"Authorization": f"Bearer {node.token('root', roles=('admin',))}"}
    room = node.channel("alice", kind="room")
    limits = {"hot_room_send_per_s": 0.1, "hot_room_send_burst": 1, "hot_batching": False}
    assert node.call("PUT", "/v1/ops/config", headers=admin, json=limits).status_code == 200
    assert node.call("POST", f"/v1/ops/rooms/{room}/throttle", headers=admin, json={"pin": True}).status_code == 200
    before = scrape(node)
    codes = [node.post("alice", room, "hi", f"t{i}").status_code for i in range(3)]
    assert codes[0] == 201 and codes[1:] == [429, 429], codes
    after = scrape(node)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("chat_hot_events_total", event="sends_throttled") == 2
    assert moved("chat_errors_total", transport="http", code="throttled") == 2
    assert moved("chat_messages_stored_total") == 1
    assert value(after, "chat_hot_rooms", state="hot") == 1 and value(after, "chat_hot_rooms", state="throttled") == 1
    assert value(after, "chat_hot_rooms_pinned") == 1 and value(after, "chat_hot_events_total", event="rooms_heated") == 1
    assert value(after, "chat_storage_queue", queue="hot") == 0


def test_no_metric_has_a_per_channel_or_per_user_label(node: Node) -> None:
    channels = [node.channel(f"user{i}", [f"peer{i}"]) for i in range(3)]
    channels.append(node.channel("user0", kind="room"))
    for i, channel in enumerate(channels):
        assert node.post(f"user{i % 3}", channel, "hello", f"k{i}").status_code == 201
    # A hot room too (pinned): counted in the hot-room families, never named in them.
    admin = {"Authorization": f"Bearer {node.token('root', roles=('admin',))}"}
    assert node.call("POST", f"/v1/ops/rooms/{channels[-1]}/throttle", headers=admin, json={"pin": True}).status_code == 200
    samples = scrape(node)
    assert value(samples, "chat_hot_rooms", state="hot") == 1
    users = {f"user{i}" for i in range(3)} | {f"peer{i}" for i in range(3)}
    for (name, labels), _ in samples.items():
        if not name.startswith("chat_"):
            continue
        for label, label_value in labels:
            assert label in ALLOWED_LABELS, (name, label)
            assert label_value not in users and label_value not in channels, (name, label, label_value)
    assert {op for (name, labels), _ in samples.items() if name == "chat_ws_frames_in_total" for key, op in labels} == {*COMMAND_OPS.values(), "unparsed"}


def test_only_the_scraper_an_admin_or_this_machine_in_development_may_read_metrics(node: Node, tmp_path: Path) -> None:
    assert node.client.get("/metrics").status_code == 401  # the test client is not on loopback
    assert node.client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40}).status_code == 401
    assert node.client.get("/metrics", headers=node.auth("alice")).status_code == 403
    admin = {"Authorization": f"Bearer {node.token('root', roles=('admin',))}"}
    assert node.client.get("/metrics", headers=admin).status_code == 200
    assert node.client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}).status_code == 200
    # The scrape token opens /metrics and nothing else.
    assert node.client.get("/v1/ops/config", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}).status_code == 401
    local = ("127.0.0.1", 40000)
    for environment, status in (("development", 200), ("production", 401)):
        settings = from_env({"CHAT_JWT_SECRET": SECRET, "CHAT_DATA_DIR": str(tmp_path / environment), "CHAT_ENV": environment, "CHAT_NODE_ID": "n"})
        with TestClient(create_app(settings), client=local) as client:
            assert client.get("/metrics").status_code == status, environment


def test_every_protocol_op_has_its_metrics_name() -> None:
    assert set(COMMAND_OPS.values()) == set(protocol._PARSERS)


def test_histogram_buckets_are_inclusive_upper_bounds() -> None:
    hist = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        hist.observe(v)
    assert hist.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert hist.count == 5 and hist.sum == pytest.approx(8.65)
    with pytest.raises(ValueError):
        Histogram((1.0, 0.5))


async def test_loop_lag_sees_a_loop_that_did_not_yield() -> None:
    lag = LoopLag(interval_s=0.005)
    lag.start()
    try:
        time.sleep(0.06)  # noqa: ASYNC251 - the thing measured: a callback that blocks the loop
        for _ in range(2):  # the overdue timer runs in the loop's next iteration, after this task
            await asyncio.sleep(0)
        assert lag.last_s >= 0.05
        assert lag.histogram.count >= 1
    finally:
        lag.stop()


def test_notification_families_exist_only_with_a_webhook(node: Node, tmp_path: Path) -> None:
    assert not [key for key in scrape(node) if key[0].startswith("chat_notify_")]
    webhook = {"CHAT_PUSH_WEBHOOK_URL": "http://127.0.0.1:9/push", "CHAT_PUSH_WEBHOOK_SECRET": "w" * 40}
    for pushing in make_node(tmp_path / "push", CHAT_METRICS_TOKEN=SCRAPE_TOKEN, **webhook):
        samples = scrape(pushing)
        for name in ("chat_notify_enqueued_total", "chat_notify_dropped_total", "chat_notify_delivered_total", "chat_notify_given_up_total"):
            assert value(samples, name) == 0, name
