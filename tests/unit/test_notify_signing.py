"""The webhook signature (chat/notify/signing.py), and the receiver's snippet in docs/protocol.md."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

from chat.notify.signing import TOLERANCE_S, sign, verify

SECRET = "s" * 40
BODY = '{"id":"1:bob","preview":"héllo \\"there\\""}'.encode()
NOW = 1_750_000_000
DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_the_header_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1750000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET, NOW) == f"t=1750000000,v1={expected}"


def test_a_signature_verifies_and_any_change_breaks_it() -> None:
    header = sign(BODY, SECRET, NOW)
    assert verify(header, BODY, SECRET, now_s=NOW)
    assert verify(header, BODY, SECRET.encode(), now_s=NOW + TOLERANCE_S)
    assert not verify(header, BODY + b" ", SECRET, now_s=NOW)
    assert not verify(header, BODY, "t" * 40, now_s=NOW)
    assert not verify(header.replace("t=1750000000", "t=1750000001"), BODY, SECRET, now_s=NOW)


def test_old_or_future_timestamps_are_refused() -> None:
    header = sign(BODY, SECRET, NOW)
    assert not verify(header, BODY, SECRET, now_s=NOW + TOLERANCE_S + 1)
    assert not verify(header, BODY, SECRET, now_s=NOW - TOLERANCE_S - 1)
    assert verify(header, BODY, SECRET, now_s=NOW + 3600, tolerance_s=3600)


def test_malformed_headers_are_refused() -> None:
    good = sign(BODY, SECRET, NOW).split(",v1=")[1]
    for header in ["", "garbage", f"v1={good}", "t=1750000000", f"t=abc,v1={good}", f"t=1750000000,v2={good}", f"t=١٧٥,v1={good}"]:
        assert not verify(header, BODY, SECRET, now_s=NOW), header


def test_any_v1_entry_may_match() -> None:
    header = sign(BODY, SECRET, NOW) + ",v1=" + "0" * 64
    assert verify("t=1750000000,v1=" + "0" * 64 + "," + header.split(",", 1)[1], BODY, SECRET, now_s=NOW)
    assert verify(header, BODY, SECRET, now_s=NOW)


def docs_snippet() -> dict[str, Any]:
    """The receiver's Python snippet from docs/protocol.md, run: what it defines."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    (snippet,) = [b for b in blocks if "def verify_chat_signature" in b]
    namespace: dict[str, Any] = {}
    exec(compile(snippet, str(DOCS), "exec"), namespace)
    return namespace


def test_the_receiver_snippet_in_the_docs_verifies_what_the_node_signs() -> None:
    check = docs_snippet()["verify_chat_signature"]
    header = sign(BODY, SECRET, NOW)
    assert check(BODY, header, SECRET, now=NOW)
    assert not check(BODY + b"x", header, SECRET, now=NOW)
    assert not check(BODY, header, "wrong" * 8, now=NOW)
    assert not check(BODY, header, SECRET, now=NOW + 301)
    assert not check(BODY, "nonsense", SECRET, now=NOW)


def test_the_receiver_snippet_survives_hostile_headers() -> None:
    check = docs_snippet()["verify_chat_signature"]
    for header in ["t=1750000000,v1=é", "t=,v1=", "=,=", "t=1750000000=1,v1=00"]:
        assert not check(BODY, header, SECRET, now=NOW), header
