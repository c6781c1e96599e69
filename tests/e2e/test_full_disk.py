"""A node whose data dir sits on a full disk (issue 12, item 10): ``chat serve`` starts, health
answers, history is served, sends get ``503 unavailable`` with one warning line in the log,
and sends work again by themselves once space is freed. The disk is a real, full tmpfs."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from tests.support.disk import small_disk
from tests.support.server import ServerProcess

FULL = "message storage is full or read-only"


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_a_node_starts_on_a_full_disk_serves_reads_and_health_and_recovers(tmp_path: Path, stop: str) -> None:
    """After SIGTERM the store closed cleanly (no WAL index left: SQLite cannot create one on
    the full disk); after SIGKILL the WAL and its index remain (the first write fails)."""
    alice = f"alice-{secrets.token_hex(4)}"
    with small_disk(tmp_path / "disk", size="8m") as disk:
        server = ServerProcess(disk.root / "node")
        try:
            server.start()
            with server.http(alice) as http:
                channel = http.post("/v1/channels", json={"kind": "group", "name": "full", "members": []}).json()["channel"]["id"]
                url = f"/v1/channels/{channel}/messages"
                sent = [http.post(url, json={"text": f"m{i}", "client_msg_id": f"c{i}"}).json()["message"] for i in range(3)]
            if stop == "sigterm":
                assert server.terminate() == 0
            else:
                server.kill()
            assert (disk.root / "node" / "chat.sqlite3-shm").exists() == (stop == "sigkill")

            disk.fill()
            server.start()  # before the fix: the schema version write failed and the node never came up
            with server.http(alice) as http:
                assert http.get("/healthz").status_code == 200
                assert http.get("/readyz").status_code == 200
                assert http.get(url).json() == {"messages": sent, "has_more": False}
                refused = http.post(url, json={"text": "lost?", "client_msg_id": "c3"})
                assert refused.status_code == 503, refused.text
                error = refused.json()["error"]
                # Refused up front: by the minter (no reservation of minting time can be written)
                # or by the store, whichever meets the full disk first.
                assert error["code"] == "unavailable" and error["retry_after_ms"] > 0
                assert error["message"] == FULL or "cannot mint" in error["message"]
                assert int(refused.headers["Retry-After"]) >= 1
                assert http.post(url, json={"text": "again", "client_msg_id": "c4"}).status_code == 503
                assert http.get(url).json()["messages"] == sent  # a refused send stored nothing
            # One line per thing that found the disk full (the store, the minting reservation),
            # never one per refused request.
            full = [line for line in server.lines if FULL in line or "No space left on device" in line]
            assert 1 <= len(full) <= 2, server.lines

            disk.free()
            with server.http(alice) as http:
                # The store retries the file at most once per recovery interval (5 s by default):
                # there is no event to wait for from outside, so poll within a bound.
                deadline = time.monotonic() + 20
                while (r := http.post(url, json={"text": "after", "client_msg_id": "c5"})).status_code == 503:
                    assert time.monotonic() < deadline, r.text
                    time.sleep(0.5)
                assert r.status_code == 201, r.text
                assert http.get(url).json()["messages"] == [*sent, r.json()["message"]]
            if any(FULL in line for line in server.lines):  # the store met the full disk itself: it says it is back
                assert server.wait_for_line("is writable again", 5), "\n".join(server.lines)
            assert server.terminate() == 0
        finally:
            server.kill()
