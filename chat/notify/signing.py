"""The webhook signature (pure): HMAC-SHA256 over the timestamp and the exact body bytes.

Header (``X-Chat-Signature``)::

    t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

The timestamp is signed with the body, so a captured request cannot be replayed later than the
receiver's tolerance (:data:`TOLERANCE_S`, 5 minutes by default) with a fresh ``t``. A receiver
recomputes the HMAC over the raw body it read — before parsing it as JSON — compares in
constant time, and checks that ``t`` is recent (docs/protocol.md has the receiver's snippet).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Chat-Signature"
TOLERANCE_S = 300  # how old (or how far ahead) a signature a receiver accepts by default


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def signature(body: bytes, secret: str | bytes, timestamp_s: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp_s>." + body``."""
    return hmac.new(_key(secret), f"{timestamp_s}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str | bytes, timestamp_s: int) -> str:
    """The ``X-Chat-Signature`` value for ``body`` sent at ``timestamp_s``."""
    return f"t={timestamp_s},v1={signature(body, secret, timestamp_s)}"


def verify(header: str, body: bytes, secret: str | bytes, *, now_s: int, tolerance_s: int = TOLERANCE_S) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` at a time within ``tolerance_s`` of ``now_s``.

    Any ``v1`` entry may match (several are allowed, for a receiver rotating secrets)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now_s - timestamp) > tolerance_s:
        return False
    expected = signature(body, secret, timestamp)
    # compare_digest on every candidate: no early exit that a timing attack could measure.
    matches = [hmac.compare_digest(expected.encode(), c.encode()) for c in candidates]
    return any(matches)
