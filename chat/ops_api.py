"""The operators' HTTP API (role ``admin``; anyone else gets 403 ``forbidden``).

* ``GET /v1/ops/config`` answers every dynamic setting's value (``config``) and declaration
  (``settings``: type, bounds, default, doc); ``PUT /v1/ops/config`` takes a partial JSON object
  of changes (``null`` resets a key to its default), validates all of them (an unknown key or a
  bad value is 400 with the reason, and nothing is applied) and answers the new values. With
  ZooKeeper every node sees a change within a second.
* ``GET /v1/ops/nodes``: every node of the cluster from the registry view, and this node's
  readiness (chat/ops_view.py).
* ``GET /v1/ops/hot-rooms``: every room hot-room protection watches, hottest first, with its
  rates (cluster-wide), member and online counts, throttle state and since when it is hot.
  ``POST /v1/ops/rooms/{id}/throttle`` with ``{"pin": true|false|null}`` pins protection of a room
  on or off on every node, or releases the pin.
* ``GET /v1/ops/events``: the dashboard's live stream (chat/ops_events.py).
* ``GET /ops``: the dashboard page itself (chat/web/ops.html; it signs in with a token).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from chat import commands
from chat.errors import BadRequest, Forbidden, NotFound
from chat.http import Authenticator, JSONResponse, read_json_object
from chat.models import Channel, ChannelKind, Principal
from chat.ops_events import OpsEvents
from chat.ops_view import OpsView
from discovery.config.base import ConfigStore

MAX_BODY_BYTES = 64 * 1024
WEB_DIR = Path(__file__).parent / "web"


class OpsApi:
    """The ``/v1/ops`` endpoints and ``/ops``; their dependencies are what they are built with."""

    def __init__(self, *, auth: Authenticator, config: ConfigStore, view: OpsView, channel: Callable[[int], Awaitable[Channel | None]]) -> None:
        self._auth = auth
        self._config = config
        self._view = view
        self._channel = channel  # the store's lookup: only an existing room can be pinned
        self._events = OpsEvents(admin=self._admin, snapshot=view.snapshot)

    def routes(self) -> list[Route]:
        return [
            Route("/ops", self.page, methods=["GET"]),
            Route("/v1/ops/config", self.get_config, methods=["GET"]),
            Route("/v1/ops/config", self.put_config, methods=["PUT"]),
            Route("/v1/ops/nodes", self.nodes, methods=["GET"]),
            Route("/v1/ops/hot-rooms", self.hot_rooms, methods=["GET"]),
            Route("/v1/ops/rooms/{channel_id}/throttle", self.throttle, methods=["POST"]),
            Route("/v1/ops/events", self._events.stream, methods=["GET"]),
        ]

    def _admin(self, request: Request) -> Principal:
        principal = self._auth.request(request)
        if not principal.is_admin:
            raise Forbidden("the operators' API needs the admin role")
        return principal

    async def page(self, request: Request) -> Response:
        """The dashboard: a static page (no data in it); it asks for a token and then the API."""
        return FileResponse(WEB_DIR / "ops.html", headers={"Cache-Control": "no-cache"})

    async def get_config(self, request: Request) -> Response:
        self._admin(request)
        return JSONResponse(self._view.config())

    async def put_config(self, request: Request) -> Response:
        self._admin(request)
        changes = await read_json_object(request, cap=MAX_BODY_BYTES)
        snapshot = await self._config.set(changes)  # ConfigRejected → 400 (errors.translate)
        return JSONResponse({"config": dict(snapshot.values)})

    async def nodes(self, request: Request) -> Response:
        self._admin(request)
        return JSONResponse(await self._view.nodes())

    async def hot_rooms(self, request: Request) -> Response:
        self._admin(request)
        return JSONResponse({"rooms": self._view.hot_rooms()})

    async def throttle(self, request: Request) -> Response:
        """``{"pin": true}`` protects the room on every node whatever its rates, ``false`` never
        protects it, ``null`` lets its rates decide again."""
        self._admin(request)
        channel_id = commands.channel_ref(request.path_params["channel_id"])
        body = await read_json_object(request, cap=MAX_BODY_BYTES)
        if set(body) != {"pin"} or not (body["pin"] is None or isinstance(body["pin"], bool)):  # 1 == True: no `in`
            raise BadRequest('the body must be {"pin": true}, {"pin": false} or {"pin": null}')
        channel = await self._channel(channel_id)
        if channel is None:
            raise NotFound(f"no channel {channel_id}")
        if channel.kind is not ChannelKind.ROOM:
            raise BadRequest("only rooms are protected (DMs and groups are never throttled)")
        try:
            await self._view.pin(channel_id, body["pin"])
        except ValueError as exc:  # past the detector's pin limit
            raise BadRequest(str(exc)) from None
        return JSONResponse({"channel": str(channel_id), "pin": body["pin"]})
