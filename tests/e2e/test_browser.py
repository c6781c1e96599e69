"""The web client in a real browser: two people sign in by name and talk in a DM.

Drives Debian's Chromium (``/usr/bin/chromium``, installed by ``scripts/ensure-test-tools.sh``)
through Playwright's sync API against a real ``chat serve`` process. The node runs with an
empty ``CHAT_JWT_SECRET`` so it generates a development secret in its data directory, which
is what enables "sign in by name" (``POST /v1/dev/token``).

No sleeps: every wait is one of Playwright's auto-retrying ``expect`` assertions with a
bounded timeout.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright import sync_api

from tests.support.server import ServerProcess

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHAT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Same-user UI updates are immediate; cross-user ones go through the server (a `joined` or
# `message` frame), so they get more room.
LOCAL_TIMEOUT_MS = 5_000
REMOTE_TIMEOUT_MS = 12_000

expect = sync_api.expect


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A node with a generated development secret (dev login on), of this test's own."""
    proc = ServerProcess(tmp_path / "node", env={"CHAT_JWT_SECRET": ""}).start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def browser() -> Iterator[object]:
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing (make test installs it: scripts/ensure-test-tools.sh)"
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


class Person:
    """One browser context (own sessionStorage) signed in as ``user``."""

    def __init__(self, browser, base_url: str, user: str) -> None:
        self.user = user
        self.context = browser.new_context(viewport={"width": 1100, "height": 760})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        # What the Content-Security-Policy (chat/browser.py) blocks is reported on the console.
        self.page.on("console", lambda m: self.errors.append(m.text) if "Content Security Policy" in m.text else None)
        self.page.goto(base_url + "/")

    def sign_in(self) -> None:
        page = self.page
        page.get_by_test_id("login-user").fill(self.user)
        page.get_by_test_id("login-button").click()
        expect(page.get_by_test_id("me")).to_have_text(self.user, timeout=LOCAL_TIMEOUT_MS)
        expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "online", timeout=LOCAL_TIMEOUT_MS)

    def channel(self, name: str):
        return self.page.locator(f'[data-testid="channel-item"][data-name="{name}"]')

    def send(self, text: str) -> None:
        composer = self.page.get_by_test_id("composer")
        composer.fill(text)
        composer.press("Enter")
        expect(composer).to_have_value("", timeout=LOCAL_TIMEOUT_MS)

    def messages(self):
        return self.page.get_by_test_id("message-list").get_by_test_id("message")


def test_dev_login_is_enabled_by_an_empty_secret(dev_server: ServerProcess) -> None:
    info = httpx.get(dev_server.http_url + "/v1/info", timeout=10).json()
    assert info["dev_login"] is True


def test_two_people_talk_in_a_dm(dev_server: ServerProcess, browser) -> None:
    alice = Person(browser, dev_server.http_url, "alice")
    bob = Person(browser, dev_server.http_url, "bob")
    alice.sign_in()
    bob.sign_in()
    # A marker that a reload would wipe: bob's page must update live.
    bob.page.evaluate("window.__sameDocument = true")

    # Alice opens a DM with bob and writes to him (markup must show as text, newlines kept).
    alice.page.get_by_test_id("new-button").click()
    alice.page.get_by_test_id("dm-user").fill("bob")
    alice.page.get_by_test_id("dialog-submit").click()
    expect(alice.page.get_by_test_id("channel-title")).to_have_text("bob", timeout=LOCAL_TIMEOUT_MS)
    expect(alice.channel("bob")).to_have_class(re.compile(r"\bselected\b"))
    first = "Hi bob <b>not bold</b>\nsecond line"
    alice.send(first)
    mine = alice.messages().last
    expect(mine.get_by_test_id("message-text")).to_have_text(first, timeout=LOCAL_TIMEOUT_MS)
    expect(mine).to_have_attribute("data-id", re.compile(r"^\d+$"), timeout=LOCAL_TIMEOUT_MS)  # acked
    expect(mine).to_have_class(re.compile(r"\bmine\b"))

    # Bob sees the conversation appear, unread, and the message in it.
    expect(bob.channel("alice")).to_be_visible(timeout=REMOTE_TIMEOUT_MS)
    expect(bob.channel("alice").get_by_test_id("unread-badge")).to_have_text("1", timeout=REMOTE_TIMEOUT_MS)
    bob.channel("alice").click()
    expect(bob.page.get_by_test_id("channel-title")).to_have_text("alice", timeout=LOCAL_TIMEOUT_MS)
    received = bob.messages().last
    expect(received).to_have_attribute("data-sender", "alice", timeout=LOCAL_TIMEOUT_MS)
    expect(received.get_by_test_id("message-sender")).to_have_text("alice")
    expect(received.get_by_test_id("message-text")).to_have_text(first)
    expect(received.get_by_test_id("message-text").locator("b")).to_have_count(0)
    expect(received).to_have_class(re.compile(r"\btheirs\b"))
    expect(bob.channel("alice").get_by_test_id("unread-badge")).to_have_count(0)

    # Bob replies; alice, still in the DM, gets it live.
    bob.send("Hey alice, got it")
    reply = alice.messages().last
    expect(reply.get_by_test_id("message-text")).to_have_text("Hey alice, got it", timeout=REMOTE_TIMEOUT_MS)
    expect(reply).to_have_attribute("data-sender", "bob")
    expect(reply.get_by_test_id("message-sender")).to_have_text("bob")
    expect(alice.messages()).to_have_count(2)
    expect(bob.messages()).to_have_count(2)

    # Typing indicator: bob types, alice sees it.
    bob.page.get_by_test_id("composer").press_sequentially("typ")
    expect(alice.page.get_by_test_id("typing")).to_have_text("bob is typing…", timeout=REMOTE_TIMEOUT_MS)

    assert bob.page.evaluate("window.__sameDocument === true"), "bob's page was reloaded"
    assert alice.errors == [] and bob.errors == [], (alice.errors, bob.errors)
    alice.context.close()
    bob.context.close()


def test_a_busy_workspace_renders_and_photographs(dev_server: ServerProcess, browser, tmp_path: Path) -> None:
    """Seed a realistic workspace over HTTP, check alice's window shows it live (history, a new
    message, bob typing), and photograph it at 1280x800. ``CHAT_SCREENSHOT=docs/screenshot.png``
    refreshes the README's screenshot."""
    screenshot = Path(os.environ.get("CHAT_SCREENSHOT") or tmp_path / "screenshot.png")
    base = dev_server.http_url

    def client(user: str) -> httpx.Client:
        token = httpx.post(base + "/v1/dev/token", json={"user": user}, timeout=10).json()["token"]
        return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    people = {u: client(u) for u in ("alice", "bob", "carol", "dave", "erin")}
    counter = iter(range(1_000_000))

    def post(user: str, channel: str, text: str) -> None:
        r = people[user].post(f"/v1/channels/{channel}/messages", json={"text": text, "client_msg_id": f"seed-{next(counter)}"})
        assert r.status_code == 201, r.text

    def create(user: str, kind: str, name: str, members: list[str]) -> str:
        r = people[user].post("/v1/channels", json={"kind": kind, "name": name, "members": members})
        assert r.status_code == 201, r.text
        return r.json()["channel"]["id"]

    def dm(user: str, other: str) -> str:
        return people[user].post("/v1/dms", json={"user": other}).json()["channel"]["id"]

    general = create("erin", "room", "general", [])
    for user in ("alice", "bob", "carol", "dave"):
        assert people[user].post(f"/v1/channels/{general}/members", json={}).status_code == 200
    post("erin", general, "Welcome to the team chat! Introduce yourselves here.")
    post("dave", general, "Deploy window moves to Thursday 16:00.")
    releases = create("dave", "room", "releases", ["alice"])
    post("dave", releases, "v2.4.0 is tagged; changelog in the usual place.")
    books = create("carol", "group", "Book club", ["alice", "erin"])
    post("erin", books, "Chapter 7 by Friday?")
    post("alice", dm("alice", "carol"), "Thanks for the notes from yesterday!")
    post("carol", dm("alice", "carol"), "Any time :)")
    post("bob", dm("alice", "bob"), "Can you review my PR when you have a minute?")

    hike = create("alice", "group", "Weekend hike", ["bob", "carol", "dave"])
    post("carol", hike, "Is everyone still up for Saturday? The forecast says sunny and 22 degrees.")
    post("bob", hike, "Yes! I can drive, the car fits four.")
    post("alice", hike, "Count me in. Which trail: the ridge loop or the lake one?")
    post("carol", hike, "Ridge loop is about 14 km with 600 m of climbing.")
    post("carol", hike, "The lake trail is flatter but very busy on weekends.")
    post("dave", hike, "Ridge loop please.\nI'll bring snacks and the first-aid kit.")
    post("alice", hike, "Ridge it is. Meet at 8:00 at the station?")
    post("bob", hike, "Works for me. Trail map: https://example.org/trails/ridge-loop")

    context = browser.new_context(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
    page = context.new_page()
    page.goto(base + "/")
    page.get_by_test_id("login-user").fill("alice")
    page.get_by_test_id("login-button").click()
    expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "online", timeout=LOCAL_TIMEOUT_MS)
    page.locator('[data-testid="channel-item"][data-name="Weekend hike"]').click()
    expect(page.get_by_test_id("message")).to_have_count(8, timeout=LOCAL_TIMEOUT_MS)
    post("alice", hike, "Great, see you all there!")
    expect(page.get_by_test_id("message")).to_have_count(9, timeout=LOCAL_TIMEOUT_MS)

    # bob is typing in the group, seen from alice's window.
    bob = Person(browser, base, "bob")
    bob.sign_in()
    bob.page.locator('[data-testid="channel-item"][data-name="Weekend hike"]').click()
    bob.page.get_by_test_id("composer").press_sequentially("I'll")
    expect(page.get_by_test_id("typing")).to_have_text("bob is typing…", timeout=REMOTE_TIMEOUT_MS)
    page.get_by_test_id("composer").fill("Great, I'll bring the thermos")
    page.mouse.move(0, 0)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
    bob.context.close()
    context.close()


def test_presence_dots_and_unread_badges_follow_the_server(dev_server: ServerProcess, browser) -> None:
    """Issue 8: two people see each other's dot turn online and offline; a second device of the
    same user shows the same unread badges as the first (read positions come from the server)."""
    alice = Person(browser, dev_server.http_url, "alice")
    alice.sign_in()
    alice.page.get_by_test_id("new-button").click()
    alice.page.get_by_test_id("dm-user").fill("bob")
    alice.page.get_by_test_id("dialog-submit").click()
    expect(alice.page.get_by_test_id("channel-title")).to_have_text("bob", timeout=LOCAL_TIMEOUT_MS)
    dot = alice.channel("bob").get_by_test_id("presence-dot")
    expect(dot).to_have_attribute("data-status", "offline", timeout=REMOTE_TIMEOUT_MS)

    bob = Person(browser, dev_server.http_url, "bob")
    bob.sign_in()
    expect(dot).to_have_attribute("data-status", "online", timeout=REMOTE_TIMEOUT_MS)
    expect(alice.page.get_by_test_id("presence-label")).to_have_text("Online", timeout=REMOTE_TIMEOUT_MS)
    expect(bob.channel("alice").get_by_test_id("presence-dot")).to_have_attribute("data-status", "online", timeout=REMOTE_TIMEOUT_MS)

    # Three messages from alice; bob reads them on his laptop (the DM open and scrolled down).
    for i in range(3):
        alice.send(f"note {i}")
    bob.channel("alice").click()
    expect(bob.messages()).to_have_count(3, timeout=REMOTE_TIMEOUT_MS)
    # Bob's phone, a fresh browser context: no badge for what the laptop already read.
    phone = Person(browser, dev_server.http_url, "bob")
    phone.sign_in()
    expect(phone.channel("alice")).to_be_visible(timeout=REMOTE_TIMEOUT_MS)
    expect(phone.channel("alice").get_by_test_id("unread-badge")).to_have_count(0, timeout=REMOTE_TIMEOUT_MS)
    # The laptop goes away; a new message is unread on the phone until the phone opens it.
    bob.context.close()
    alice.send("one more")
    expect(phone.channel("alice").get_by_test_id("unread-badge")).to_have_text("1", timeout=REMOTE_TIMEOUT_MS)
    phone.channel("alice").click()
    expect(phone.channel("alice").get_by_test_id("unread-badge")).to_have_count(0, timeout=LOCAL_TIMEOUT_MS)

    # Bob closes his last tab: alice sees him go offline with a "last seen".
    phone.context.close()
    expect(dot).to_have_attribute("data-status", "offline", timeout=REMOTE_TIMEOUT_MS)
    expect(alice.page.get_by_test_id("presence-label")).to_contain_text("Last seen", timeout=REMOTE_TIMEOUT_MS)
    assert alice.errors == []
