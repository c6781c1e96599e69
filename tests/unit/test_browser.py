"""Issue 12, item 11, in process: security headers on every response, the CHAT_ALLOWED_ORIGINS
policy on WebSocket handshakes and HTTP requests (CORS for listed origins), and the token taken
from the query string only under its exact name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from starlette.testclient import WebSocketDenialResponse

from chat.browser import CONTENT_SECURITY_POLICY, Origins
from tests.unit.conftest import Node, make_node
from tests.unit.test_ws import Ws

LISTED = "https://app.example.com"


@pytest.fixture
def listing(tmp_path: Path) -> Iterator[Node]:
    yield from make_node(tmp_path, CHAT_ALLOWED_ORIGINS=f"{LISTED},http://127.0.0.1:9000")


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/style.css", "/v1/info", "/healthz", "/v1/nope", "/v1/channels"])
def test_every_response_carries_the_security_headers(node: Node, path: str) -> None:
    r = node.call("GET", path)
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY and "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert (r.headers["x-frame-options"], r.headers["x-content-type-options"], r.headers["referrer-policy"]) == ("DENY", "nosniff", "no-referrer")


def test_the_web_client_needs_nothing_the_policy_forbids() -> None:
    """No inline script or style in the page the policy is written for ('self' only)."""
    html = (Path(__file__).resolve().parents[2] / "chat" / "web" / "index.html").read_text()
    assert "<script>" not in html and "<style" not in html and " style=" not in html and "onclick" not in html.lower()


def test_websocket_origins(listing: Node) -> None:
    token = listing.token("alice")
    for origin in (None, "http://testserver", LISTED, "HTTPS://APP.EXAMPLE.COM:443", "http://127.0.0.1:9000"):
        headers = {} if origin is None else {"origin": origin}
        assert Ws(listing.websocket(f"/v1/ws?token={token}", headers=headers)).hello["user"] == "alice", origin
    for origin in ("https://evil.example", "http://app.example.com", "null", "http://testserver.evil", "https://127.0.0.1:9000"):
        with pytest.raises(WebSocketDenialResponse) as denied:
            listing.websocket(f"/v1/ws?token={token}", headers={"origin": origin})
        assert denied.value.status_code == 403, origin
        assert orjson.loads(denied.value.content)["error"]["code"] == "forbidden"


def test_http_origins_and_cors(listing: Node) -> None:
    r = listing.call("GET", "/v1/channels", "alice", headers={"origin": LISTED})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == LISTED and "Origin" in r.headers["vary"]
    r = listing.call("GET", "/v1/channels", "alice", headers={"origin": "http://testserver"})  # same origin: no CORS needed
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = listing.call("GET", "/v1/channels", "alice", headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden" and "access-control-allow-origin" not in r.headers
    preflight = {"origin": LISTED, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type"}
    r = listing.call("OPTIONS", "/v1/channels", headers=preflight)
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == LISTED
    assert "POST" in r.headers["access-control-allow-methods"] and "authorization" in r.headers["access-control-allow-headers"]
    r = listing.call("OPTIONS", "/v1/channels", headers={**preflight, "origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert listing.call("OPTIONS", "/v1/channels").status_code == 405  # not a preflight: as before


def test_the_default_is_this_origin_and_clients_without_one(node: Node) -> None:
    assert node.call("GET", "/v1/channels", "alice").status_code == 200
    assert node.call("GET", "/v1/channels", "alice", headers={"origin": "http://testserver"}).status_code == 200
    assert node.call("GET", "/v1/channels", "alice", headers={"origin": LISTED}).status_code == 403


def test_origin_normalization() -> None:
    origins = Origins(["https://a.example:443", "http://b.example:8080"])
    assert origins.listed("https://a.example") and origins.listed("http://B.example:8080")
    assert not origins.listed("http://a.example") and not origins.listed("https://a.example/path")
    assert origins.allows("http://c.example", "c.example:80") and not origins.allows("http://c.example", "d.example")
    assert not origins.allows("http://user@c.example", "c.example")


def test_the_query_token_counts_only_under_its_exact_name(node: Node) -> None:
    token = node.token("alice")
    assert Ws(node.websocket(f"/v1/ws?token={token}")).hello["user"] == "alice"
    assert Ws(node.websocket(f"/v1/ws?x=1&token={token.replace('.', '%2E')}")).hello["user"] == "alice"  # the value may be escaped
    for path in (f"/v1/ws?%74oken={token}", f"/v1/ws?TOKEN={token}", f"/v1/ws?token%3D{token}", f"/v1/ws?tok%65n={token}"):
        with pytest.raises(WebSocketDenialResponse) as denied:
            node.websocket(path)
        assert denied.value.status_code == 401, path


@pytest.mark.parametrize("value", ["*", "app.example.com", "https://app.example.com/", "ftp://x", "https://a.example,null"])
def test_allowed_origins_are_checked_at_start(value: str) -> None:
    from chat.config import ConfigError, from_env

    with pytest.raises(ConfigError) as error:
        from_env({"CHAT_JWT_SECRET": "k" * 40, "CHAT_ALLOWED_ORIGINS": value})
    assert error.value.problems[0].startswith("CHAT_ALLOWED_ORIGINS")
