"""Issue 12, item 11, against a real ``chat serve``: invalid UTF-8 frames are closed 1007 and
logged once, not a traceback each; a token under another spelling (``%74oken``) is refused and
never logged in clear; a foreign Origin is refused 403 with the protocol's body."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.server import ServerProcess

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("origins"), env={"CHAT_ALLOWED_ORIGINS": "https://app.example.com"}).start()
    yield proc
    proc.kill()


def test_invalid_utf8_frames_close_1007_and_log_one_line(node: ServerProcess) -> None:
    async def one() -> int | None:
        async with websockets.connect(f"{node.ws_url}?token={node.token('utf8')}") as ws:
            await ws.recv()  # hello
            await ws.send(b"\xff\xfe{}", text=True)  # a text frame that is not UTF-8
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        return None

    async def twenty() -> list[int | None]:
        return await asyncio.gather(*(one() for _ in range(20)))

    assert asyncio.run(twenty()) == [1007] * 20
    about_it = [line for line in node.lines if "utf-8" in line.lower()]
    assert len(about_it) == 1, about_it
    assert not any("Traceback" in line or "UnicodeDecodeError" in line for line in node.lines)


def test_a_token_under_another_spelling_is_refused_and_not_logged(node: ServerProcess) -> None:
    token = node.token("speller")

    async def attempt() -> int:
        try:
            async with websockets.connect(f"{node.ws_url}?%74oken={token}"):
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    assert asyncio.run(attempt()) == 401
    assert node.wait_for_line("%74oken=<redacted>", 5)
    assert not any(token in line for line in node.lines)


@pytest.mark.parametrize(("origin", "status"), [("https://evil.example", 403), ("https://app.example.com", 101), (None, 101)])
def test_websocket_origins_over_a_real_handshake(node: ServerProcess, origin: str | None, status: int) -> None:
    async def attempt() -> tuple[int, bytes]:
        try:
            async with websockets.connect(f"{node.ws_url}?token={node.token('origin')}", origin=origin) as ws:  # type: ignore[arg-type]
                await ws.recv()
                return 101, b""
        except InvalidStatus as refused:
            return refused.response.status_code, refused.response.body or b""

    got, body = asyncio.run(attempt())
    assert got == status
    if status == 403:
        assert orjson.loads(body)["error"]["code"] == "forbidden"


def test_security_headers_over_http(node: ServerProcess) -> None:
    with node.http() as http:
        for path in ("/", "/static/app.js", "/healthz"):
            r = http.get(path)
            assert r.status_code == 200 and "frame-ancestors 'none'" in r.headers["content-security-policy"]
            assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
