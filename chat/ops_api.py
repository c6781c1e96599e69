"""The operators' HTTP API (role ``admin``; anyone else gets 403 ``forbidden``).

``GET /v1/ops/config`` answers every dynamic setting's value; ``PUT /v1/ops/config`` takes a
partial JSON object of changes (``null`` resets a key to its default), validates all of them
(an unknown key or a bad value is 400 with the reason, and nothing is applied) and answers the
new values. With ZooKeeper every node sees a change within a second.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat.errors import Forbidden
from chat.http import Authenticator, JSONResponse, read_json_object
from chat.models import Principal
from discovery.config.base import ConfigStore

MAX_BODY_BYTES = 64 * 1024


class OpsApi:
    """The ``/v1/ops`` endpoints; their dependencies are what they are built with."""

    def __init__(self, *, auth: Authenticator, config: ConfigStore) -> None:
        self._auth = auth
        self._config = config

    def routes(self) -> list[Route]:
        return [
            Route("/v1/ops/config", self.get_config, methods=["GET"]),
            Route("/v1/ops/config", self.put_config, methods=["PUT"]),
        ]

    def _admin(self, request: Request) -> Principal:
        principal = self._auth.request(request)
        if not principal.is_admin:
            raise Forbidden("the operators' API needs the admin role")
        return principal

    async def get_config(self, request: Request) -> Response:
        self._admin(request)
        return JSONResponse({"config": dict(self._config.snapshot().values)})

    async def put_config(self, request: Request) -> Response:
        self._admin(request)
        changes = await read_json_object(request, cap=MAX_BODY_BYTES)
        snapshot = await self._config.set(changes)  # ConfigRejected → 400 (errors.translate)
        return JSONResponse({"config": dict(snapshot.values)})
