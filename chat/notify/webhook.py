"""One signed POST of a notification to the push webhook (httpx), and its outcome.

Headers: ``Content-Type: application/json``, ``Idempotency-Key: <notification id>`` (the same on
every attempt: receivers de-duplicate on it), ``X-Chat-Attempt: <n>``, and ``X-Chat-Signature``
(:mod:`chat.notify.signing`) over the exact body bytes with a fresh timestamp per attempt.

Bounds: the whole request — connect, TLS, send, response — within ``timeout_s``; at most
:data:`DRAIN_BYTES` of a response body are read and none is kept (a small body read to its end
lets the connection be reused; a receiver cannot make the node buffer one); redirects are not
followed (a 3xx is a failure: configure the final URL); at most ``max_connections`` requests at
once. A 2xx is a delivery; anything else, or no answer, is a failure the deliverer retries.
Failures are logged once per outage (:class:`~chat.notify.outage.Outage`), naming only the
URL's scheme and host: a URL may carry a token in its path or query.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx

from chat.notify.outage import Outage
from chat.notify.signing import SIGNATURE_HEADER, sign
from chat.store.outbox import OutboxItem

log = logging.getLogger(__name__)

USER_AGENT = "chat-server-notify/1"
DRAIN_BYTES = 64 * 1024  # of a response body read (and dropped) so its connection can be reused


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one POST went."""

    delivered: bool
    detail: str  # "HTTP 204", "HTTP 500", "ConnectError", "no answer within 5.0 s"
    retry_after_s: float | None = None  # what a 429/503 asked for


def url_for_logs(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: enough to recognise it, nothing a token could hide in."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now_s)
    except (TypeError, ValueError):
        return None


class Webhook:
    """The push webhook: signs and POSTs outbox items. Open before use, close after."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        clock_s: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        # Timeouts
        timeout_s: float = 5.0,
        # Limits
        max_connections: int = 16,
    ) -> None:
        self._url = url
        self._secret = secret.encode()
        # Unix time for the signature's timestamp (injected in tests).
        self._clock_s = clock_s
        self._timeout_s = timeout_s
        self._transport = transport  # tests may hand in one; None: httpx's own
        self._max_connections = max_connections
        self._client: httpx.AsyncClient | None = None
        self.outage = Outage(f"push webhook {url_for_logs(url)}", log)

    def __repr__(self) -> str:
        return f"<Webhook {url_for_logs(self._url)}>"  # never the full URL, never the secret

    async def open(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout_s),
            limits=httpx.Limits(max_connections=self._max_connections, max_keepalive_connections=self._max_connections),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            transport=self._transport,
        )

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def post(self, item: OutboxItem) -> Outcome:
        """POST ``item`` once; never raises for what the network or the receiver did."""
        outcome = await self._post(item)
        if outcome.delivered:
            self.outage.recovered()
        else:
            self.outage.failed(outcome.detail, "notifications are retried with backoff")
        return outcome

    async def _post(self, item: OutboxItem) -> Outcome:
        if self._client is None:
            return Outcome(False, "webhook client is closed")
        now_s = self._clock_s()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": item.id,
            "X-Chat-Attempt": str(item.attempts),
            SIGNATURE_HEADER: sign(item.body, self._secret, int(now_s)),
        }
        status: int | None = None
        wait_s: float | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._client.stream("POST", self._url, content=item.body, headers=headers) as response:
                    status = response.status_code
                    wait_s = retry_after(response.headers.get("retry-after"), now_s) if status in (429, 503) else None
                    await _drain(response)
        except (TimeoutError, httpx.HTTPError) as exc:
            if status is None:
                return Outcome(False, f"no answer within {self._timeout_s:g} s" if isinstance(exc, TimeoutError) else type(exc).__name__)
            # The receiver answered; only reading the rest of its body failed: the status counts.
        if status is None:  # unreachable: the stream either answered or raised
            return Outcome(False, "no answer")
        return Outcome(200 <= status < 300, f"HTTP {status}", wait_s)


async def _drain(response: httpx.Response) -> None:
    """Read and drop up to :data:`DRAIN_BYTES` of the body: a body read to its end keeps the
    connection for the next request; a longer one is abandoned (its connection closed)."""
    if response.is_stream_consumed:  # already read (an in-process transport answers that way)
        return
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read > DRAIN_BYTES:
            return
