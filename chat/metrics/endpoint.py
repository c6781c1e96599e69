"""``GET /metrics``: the node's metrics in Prometheus text format, for its scraper only.

Who may read them (the first that applies):

* a request with ``Authorization: Bearer <CHAT_METRICS_TOKEN>`` — the scraper's own secret,
  compared in constant time. It opens ``/metrics`` and nothing else, so a leaked scrape token
  gives no power over the node (an admin token would);
* a request with an ``admin`` token (an operator's ``curl``);
* in development only (``CHAT_ENV`` not ``production``), a request from a loopback address with
  no ``Authorization`` header at all — ``curl localhost:8000/metrics`` just works. Production
  never trusts an address: behind a proxy or a sidecar every request can come from loopback.

Anything else is 401 ``unauthorized`` (no or wrong credentials) or 403 ``forbidden`` (a valid
token without the admin role). The metrics carry no channel, user or token, but they describe
the node's load: they are not for the public.
"""

from __future__ import annotations

import hmac

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat.errors import Forbidden, Unauthorized
from chat.http import Authenticator, bearer_token, is_loopback


class MetricsEndpoint:
    """The ``/metrics`` route over ``registry``, guarded as the module docstring says."""

    def __init__(self, *, registry: CollectorRegistry, auth: Authenticator, token: str, trust_loopback: bool) -> None:
        self._registry = registry
        self._auth = auth
        self._token = token.encode()
        self._trust_loopback = trust_loopback

    def routes(self) -> list[Route]:
        return [Route("/metrics", self.metrics, methods=["GET"])]

    async def metrics(self, request: Request) -> Response:
        self._authorize(request)
        # Encoded on the loop: the collector reads plain counters between two updates, and
        # the whole exposition takes about a millisecond.
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(self._registry), headers={"Content-Type": content_type, "Cache-Control": "no-store"})

    def _authorize(self, request: Request) -> None:
        token = bearer_token(request.headers)
        if token is None:
            if "authorization" not in request.headers and self._trust_loopback and is_loopback(request):
                return
            raise Unauthorized("metrics need Authorization: Bearer with the scrape token (CHAT_METRICS_TOKEN) or an admin token")
        if self._token and hmac.compare_digest(token.encode(), self._token):
            return
        if not self._auth.request(request).is_admin:  # Unauthorized for a bad token
            raise Forbidden("metrics need the scrape token or the admin role")

