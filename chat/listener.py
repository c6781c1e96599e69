"""uvicorn's connection protocols with the limits uvicorn lacks: a handshake timeout, a bounded
request head, and an answer (then a close) for every request refused before the app sees it.

Why: uvicorn 0.54 with httptools and the sans-I/O WebSocket implementation has no timeout for a
request head that never completes (a socket silent after connect, or sending its headers at one
byte a second, stays open for good), no bound on the head's size (httptools gathers a header of
any length), and when the sans-I/O WebSocket parser refuses an oversize request line or header
it logs "HTTP response sent (414/431)" but neither writes that response nor closes the socket.

chat/server.py hands the two classes below to uvicorn (``http=`` and ``ws=``: uvicorn takes a
class for either):

* :class:`GuardedHttpProtocol` (a ``HttpToolsProtocol``): a timer armed at ``connection_made``
  (and at ``on_message_begin`` for each later request on a kept-alive connection) and cancelled
  at ``on_headers_complete``. If it fires first, the socket is answered 408 when it sent
  anything (else simply closed). The head is bounded: a URL over :data:`MAX_URL_BYTES` is 414; a
  header line over :data:`MAX_HEADER_LINE_BYTES`, more than :data:`MAX_HEADERS` headers or more
  than :data:`MAX_HEAD_BYTES` in all is 431. These are below websockets' own limits (8 KiB per
  line, 128 headers), so an upgrade that passes here passes there. Every refusal is the
  protocol's JSON error body with ``Connection: close``; the socket then drops what the client
  still sends for at most :data:`LINGER_S` (so the client reads the answer, not a reset caused by
  unread bytes) and is closed.
* :class:`GuardedWebSocketProtocol` (chat/wsproto.py's ``WebSocketsSansIOProtocol``): when the
  sans-I/O parser refuses the handshake request, writes the response it queued and closes the
  socket (a safety net: the limits above leave it little to refuse).

uvicorn internals this relies on (the version range is pinned in pyproject.toml, and
tests/unit/test_listener.py fails loudly when one of them changes):

* ``HttpToolsProtocol(config, server_state, app_state, _loop)``; its ``transport`` and ``loop``
  attributes; ``connection_made``, ``connection_lost`` and ``data_received``; the httptools
  parser callbacks ``on_message_begin`` (which resets ``self.url``), ``on_url`` (which appends to
  ``self.url``), ``on_header`` and ``on_headers_complete``; and that an exception raised in a
  callback makes ``data_received`` call ``send_400_response(msg)`` (httptools wraps it in
  ``HttpParserCallbackError``), which we override to send our answer instead.
* ``WebSocketsSansIOProtocol.data_received``, its ``conn`` (a websockets ``ServerProtocol``
  with ``handshake_exc`` and ``data_to_send()``), ``handshake_initiated`` and ``transport``.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any, ClassVar, NoReturn

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from chat.errors import BadRequest, ChatError, HeadersTooLarge, RequestTimeout, UriTooLong
from chat.ratelog import OncePerInterval
from chat.wsproto import DirectSocket

log = logging.getLogger(__name__)

# Limits of a request head (request line and headers), in bytes unless named otherwise.
MAX_URL_BYTES = 8000
MAX_HEADER_LINE_BYTES = 8000  # "name: value"
MAX_HEADERS = 100
MAX_HEAD_BYTES = 64 * 1024
# After a refusal, how long what the client still sends is read and dropped before the close.
LINGER_S = 1.0


def raw_response(error: ChatError) -> bytes:
    """An HTTP/1.1 response carrying ``error`` in the protocol's body, closing the connection."""
    body = orjson.dumps({"error": error.to_body()})
    head = [
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if error.retry_after_s is not None:
        head.append(f"retry-after: {error.retry_after_s}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the answer is in ``_refusal``."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a handshake timeout and a bounded request head."""

    #: Seconds from connect (or the first byte of a later request) to the end of its headers.
    handshake_timeout_s: ClassVar[float] = 10.0
    #: Timeouts and refusals are logged once per interval (outsiders trigger them at will).
    refusal_log: ClassVar[OncePerInterval] = OncePerInterval()

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_done = False  # the current request's headers are complete
        self._head_bytes = 0  # bytes of the current, incomplete head (counted per read)
        self._header_count = 0
        self._refusal: ChatError | None = None  # set by a callback just before it stops the parser
        self._refused = False  # answered and lingering: further bytes are dropped

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._refused or self._head_done or self.transport.is_closing():
            return
        # The head is still incomplete after this read, so all of it was head: httptools would
        # gather a header of any length before calling on_header, so the total is bounded here.
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(HeadersTooLarge(f"the request head is larger than {MAX_HEAD_BYTES} bytes"))

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_done = False
        self._head_bytes = 0
        self._header_count = 0
        if self._head_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self._stop(UriTooLong(f"the request URL is longer than {MAX_URL_BYTES} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            self._stop(HeadersTooLarge(f"more than {MAX_HEADERS} header lines"))
        if len(name) + len(value) + 2 > MAX_HEADER_LINE_BYTES:
            self._stop(HeadersTooLarge(f"a header line is longer than {MAX_HEADER_LINE_BYTES} bytes"))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_done = True
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to whatever httptools refused, a refusal of ours included.
        self._refuse(self._refusal or BadRequest("invalid HTTP request"))

    # Refusing

    def _stop(self, error: ChatError) -> NoReturn:
        self._refusal = error
        raise _Refused

    def _refuse(self, error: ChatError) -> None:
        self._refused = True
        self._disarm()
        self.refusal_log.log(log, logging.INFO, "refused a request head (%s)", error.message)
        if self.transport.is_closing():
            return
        self.transport.write(raw_response(error))
        if self.transport.can_write_eof():
            self.transport.write_eof()  # FIN after the answer; reading goes on until the close
        self.loop.call_later(LINGER_S, self._close_now)

    def _close_now(self) -> None:
        if not self.transport.is_closing():
            # abort, not close: close would wait for a peer that does not read to take the answer.
            self.transport.abort()

    # The handshake timer

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.handshake_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or self._head_done or self.transport.is_closing():
            return
        if self._head_bytes:
            self._refuse(RequestTimeout(f"the request head did not arrive within {self.handshake_timeout_s:g} s"))
        else:  # silent since connect (or since the last response): nothing to answer
            self._refused = True
            self.refusal_log.log(log, logging.INFO, "closed a connection silent for %g s", self.handshake_timeout_s)
            self.transport.close()


class GuardedWebSocketProtocol(DirectSocket):
    """uvicorn's sans-I/O WebSocket protocol with the direct path (chat/wsproto.py), which also
    answers and closes a refused handshake."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None and not self.transport.is_closing():
            # The parser refused the request and queued its answer (414, 431 …, or nothing for
            # garbage); uvicorn neither writes it nor closes the socket.
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()


def http_protocol(*, handshake_timeout_s: float) -> type[GuardedHttpProtocol]:
    """The HTTP protocol class for uvicorn's ``http=``, with this node's handshake timeout."""

    class Configured(GuardedHttpProtocol):
        pass

    Configured.handshake_timeout_s = handshake_timeout_s
    Configured.refusal_log = OncePerInterval()
    return Configured
