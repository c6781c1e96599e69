"""The operations dashboard in a real browser: an admin signs in to ``/ops`` on a development node,
sees the cluster's nodes and this node's health update live, changes a threshold, sees a room
turn hot live, pins and releases it, and the page works on a phone.

Drives Debian's Chromium through Playwright like tests/e2e/test_browser.py; every wait is one of
Playwright's bounded ``expect`` assertions. ``CHAT_SCREENSHOT_OPS=docs/ops-dashboard.png``
refreshes the README's screenshot of the dashboard.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright import sync_api

from tests.e2e.test_browser import LOCAL_TIMEOUT_MS, REMOTE_TIMEOUT_MS, Person, browser, dev_server  # noqa: F401 - fixtures
from tests.support.server import ServerProcess

pytestmark = pytest.mark.browser
expect = sync_api.expect


class Operator:
    """One browser context on /ops, its script errors and CSP violations collected."""

    def __init__(self, chromium: sync_api.Browser, base_url: str, *, width: int = 1280, height: int = 860) -> None:
        self.context = chromium.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        # What the Content-Security-Policy (chat/browser.py) blocks is reported on the console.
        self.page.on("console", lambda m: self.errors.append(m.text) if "Content Security Policy" in m.text else None)
        self.page.goto(base_url + "/ops")

    def sign_in_as_admin(self, name: str = "ops") -> None:
        page = self.page
        expect(page.get_by_test_id("ops-dev-form")).to_be_visible(timeout=LOCAL_TIMEOUT_MS)
        page.get_by_test_id("ops-dev-user").fill(name)
        page.get_by_test_id("ops-dev-button").click()
        expect(page.get_by_test_id("ops-dashboard")).to_be_visible(timeout=LOCAL_TIMEOUT_MS)
        expect(page.get_by_test_id("ops-live")).to_have_attribute("data-state", "live", timeout=REMOTE_TIMEOUT_MS)

    def node_row(self, node_id: str) -> sync_api.Locator:
        return self.page.locator(f'[data-testid="node-row"][data-node="{node_id}"]')


class Trickle:
    """Messages to ``room`` at about ``per_s`` from a thread of its own until the block ends: a
    busy room for the dashboard to show (its rate, sparkline, heat)."""

    def __init__(self, client: httpx.Client, room: str, *, per_s: float) -> None:
        self._client = client
        self._room = room
        self._interval_s = 1 / per_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trickle", daemon=True)
        self.sent = 0
        self.refused: list[str] = []

    def __enter__(self) -> Trickle:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):  # the pace of a busy room, not a wait for an event
            r = self._client.post(f"/v1/channels/{self._room}/messages", json={"text": f"hello {self.sent}", "client_msg_id": f"t{self.sent}"})
            if r.status_code == 201:
                self.sent += 1
            else:
                self.refused.append(r.text)


@pytest.fixture
def operator(dev_server: ServerProcess, browser: sync_api.Browser) -> Iterator[Operator]:  # noqa: F811 - the imported fixtures
    person = Operator(browser, dev_server.http_url)
    yield person
    person.context.close()


def test_a_token_without_the_admin_role_is_turned_away(dev_server: ServerProcess, operator: Operator) -> None:  # noqa: F811
    page = operator.page
    page.get_by_test_id("ops-token").fill(dev_server.token("alice"))
    page.get_by_test_id("ops-token-button").click()
    expect(page.get_by_test_id("ops-login-error")).to_have_text("That token has no admin role.", timeout=LOCAL_TIMEOUT_MS)
    expect(page.get_by_test_id("ops-dashboard")).to_be_hidden()
    page.get_by_test_id("ops-token").fill(dev_server.token("root", roles=("admin",)))
    page.get_by_test_id("ops-token-button").click()
    expect(page.get_by_test_id("ops-live")).to_have_attribute("data-state", "live", timeout=REMOTE_TIMEOUT_MS)
    assert operator.errors == [], operator.errors


def test_an_admin_sees_the_node_and_its_load_live(dev_server: ServerProcess, operator: Operator, browser: sync_api.Browser, tmp_path: Path) -> None:  # noqa: F811
    operator.sign_in_as_admin()
    page = operator.page
    node_id = dev_server.env["CHAT_NODE_ID"]
    row = operator.node_row(node_id)
    expect(row).to_be_visible(timeout=REMOTE_TIMEOUT_MS)
    expect(row).to_contain_text("this node")
    expect(row).to_contain_text("serving")
    expect(row.get_by_test_id("node-connections")).to_have_text(re.compile(r"^0 / 10,?000$"))
    expect(page.get_by_test_id("ops-health")).to_have_text("Ready", timeout=REMOTE_TIMEOUT_MS)
    expect(page.get_by_test_id("ops-node")).to_have_text(f"via {node_id}")

    # Someone opens the chat client: the dashboard shows the connection without a reload.
    page.evaluate("window.__sameDocument = true")
    alice = Person(browser, dev_server.http_url, "alice")
    alice.sign_in()
    expect(row.get_by_test_id("node-connections")).to_have_text(re.compile(r"^1 / 10,?000$"), timeout=REMOTE_TIMEOUT_MS)
    alice.context.close()
    expect(row.get_by_test_id("node-connections")).to_have_text(re.compile(r"^0 / 10,?000$"), timeout=REMOTE_TIMEOUT_MS)
    assert page.evaluate("window.__sameDocument === true"), "the dashboard was reloaded"

    # A quiet node: no room watched, and no breaker (its store and relay are embedded).
    expect(page.get_by_test_id("room-row")).to_have_count(0)
    expect(page.get_by_test_id("ops-breakers-none")).to_be_visible()
    assert operator.errors == [], operator.errors


def test_an_admin_sees_a_room_turn_hot_pins_and_releases_it_after_changing_a_threshold(
    dev_server: ServerProcess,  # noqa: F811
    operator: Operator,
    tmp_path: Path,
) -> None:
    operator.sign_in_as_admin()
    page = operator.page
    with contextlib.ExitStack() as stack:
        admin = stack.enter_context(dev_server.http(token=dev_server.token("root", roles=("admin",))))
        alice = stack.enter_context(dev_server.http("alice"))
        # A threshold changed on the dashboard: a room is hot from 2 messages/s (not 50), no restart.
        page.get_by_test_id("setting-hot_send_per_s").fill("2")
        page.get_by_test_id("ops-settings-save").click()
        expect(page.get_by_test_id("ops-settings-status")).to_have_text("Saved hot_send_per_s.", timeout=LOCAL_TIMEOUT_MS)
        assert admin.get("/v1/ops/config").json()["config"]["hot_send_per_s"] == 2.0

        # A room gets busy: its row appears and turns hot while the page stays open.
        r = alice.post("/v1/channels", json={"kind": "room", "name": "launch party", "members": ["bob"]})
        assert r.status_code == 201, r.text
        room = r.json()["channel"]["id"]
        row = page.locator(f'[data-testid="room-row"][data-channel="{room}"]')
        expect(row).to_have_count(0)
        trickle = Trickle(dev_server.http("alice"), room, per_s=8)  # far above 2/s, far below any limit
        stack.enter_context(trickle)
        expect(row).to_have_attribute("data-hot", "true", timeout=REMOTE_TIMEOUT_MS)
        expect(row.get_by_test_id("room-send_per_s")).not_to_have_text("0", timeout=REMOTE_TIMEOUT_MS)
        expect(row.get_by_test_id("room-state")).to_contain_text("hot")
        expect(row.locator('td[data-label="Members"]')).to_have_text("2", timeout=REMOTE_TIMEOUT_MS)
        expect(row.locator("polyline").first).to_have_attribute("points", re.compile(r"\d"), timeout=REMOTE_TIMEOUT_MS)  # a sparkline
        expect(page.locator("#rooms-count")).to_have_text(re.compile(r"^1 hot of \d+ watched$"))

        # Unprotect it by hand (pinned off on every node), then protect it, then back to automatic.
        row.get_by_test_id("pin-off").click()
        expect(row).to_have_attribute("data-pinned", "false", timeout=REMOTE_TIMEOUT_MS)
        expect(row).to_have_attribute("data-hot", "false")
        expect(row.get_by_test_id("pin-off")).to_have_attribute("aria-pressed", "true")
        row.get_by_test_id("pin-on").click()
        expect(row).to_have_attribute("data-pinned", "true", timeout=REMOTE_TIMEOUT_MS)
        expect(row).to_have_attribute("data-hot", "true")
        expect(page.get_by_test_id("ops-rooms-status")).to_have_text(f"Room {room}: protected on every node.")
        shown = {r["channel"]: r for r in admin.get("/v1/ops/hot-rooms").json()["rooms"]}[room]
        assert shown["pinned"] is True and shown["hot"] is True and shown["members"] == 2
        assert operator.errors == [], operator.errors

        # The README's screenshot: a hot room, pinned, on the live dashboard (a few seconds of its rates).
        expect(row.locator("polyline").first).to_have_attribute("points", re.compile(r"^(\S+ ){5,}\S+$"), timeout=REMOTE_TIMEOUT_MS)
        screenshot = Path(os.environ.get("CHAT_SCREENSHOT_OPS") or tmp_path / "ops-dashboard.png")
        page.set_viewport_size({"width": 1280, "height": 1180})  # the whole page, nothing sticky mid-way
        page.screenshot(path=str(screenshot))
        assert screenshot.stat().st_size > 10_000

        row.get_by_test_id("pin-release").click()
        expect(row).to_have_attribute("data-pinned", "null", timeout=REMOTE_TIMEOUT_MS)
        expect(row.get_by_test_id("pin-release")).to_have_attribute("aria-pressed", "true")
        expect(row).to_have_attribute("data-hot", "true")  # its rates decide again: still busy, still hot
        shown = {r["channel"]: r for r in admin.get("/v1/ops/hot-rooms").json()["rooms"]}[room]
        assert shown["pinned"] is None and shown["hot"] is True
        assert operator.errors == [], operator.errors
    assert trickle.sent > 10 and trickle.refused == [], trickle.refused


def test_the_dashboard_fits_a_phone(dev_server: ServerProcess, browser: sync_api.Browser) -> None:  # noqa: F811
    phone = Operator(browser, dev_server.http_url, width=390, height=844)
    try:
        phone.sign_in_as_admin()
        expect(phone.node_row(dev_server.env["CHAT_NODE_ID"])).to_be_visible(timeout=REMOTE_TIMEOUT_MS)
        overflow = phone.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow} px on a phone"
        # Every control has an accessible name (a label, or its text).
        unnamed = phone.page.evaluate(
            """[...document.querySelectorAll('#dash-view input, #dash-view button, #dash-view textarea')]
                 .filter(e => e.offsetParent !== null && !(e.labels && e.labels.length) && !e.textContent.trim() && !e.getAttribute('aria-label'))
                 .map(e => e.outerHTML)"""
        )
        assert unnamed == []
        assert phone.errors == [], phone.errors
    finally:
        phone.context.close()
