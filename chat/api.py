"""HTTP API for bots, clients and operators (PROTOCOL.md, "HTTP API").

Each endpoint authenticates, turns the request into a typed command (``chat.commands``) and
calls a service: the same commands and services as the WebSocket ops. Errors leave as the
protocol's error body through the handlers at the bottom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat import commands
from chat.channels import ChannelService, ChannelView
from chat.errors import BadRequest, ChatError, Forbidden, Internal, NotFound, Unauthorized, translate
from chat.http import Authenticator, JSONResponse, error_response, is_loopback, read_json_object
from chat.node import Node
from chat.service import MessageService
from presence.tracker import PresenceTracker

MAX_BODY_BYTES_FLOOR = 64 * 1024
DEV_TOKEN_TTL_S = 12 * 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiSettings:
    node_id: str
    max_body_bytes: int  # a maximal message with every character escaped fits
    max_message_chars: int
    group_max_members: int


#: Issues a development token for a user name with roles; None when sign-in by name is disabled.
DevTokens = Callable[[str, tuple[str, ...]], str] | None


class HttpApi:
    """The endpoints of the HTTP API; its dependencies are what it is built with."""

    def __init__(
        self,
        *,
        auth: Authenticator,
        messages: MessageService,
        channels: ChannelService,
        presence: PresenceTracker,
        node: Node,
        settings: ApiSettings,
        dev_tokens: DevTokens = None,
    ) -> None:
        self._auth = auth
        self._messages = messages
        self._channels = channels
        self._presence = presence
        self._node = node
        self._settings = settings
        self._dev_tokens = dev_tokens
        self._body_cap = max(MAX_BODY_BYTES_FLOOR, settings.max_body_bytes)

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/v1/info", self.info, methods=["GET"]),
            Route("/v1/dev/token", self.dev_token, methods=["POST"]),
            Route("/v1/connect", self.connect, methods=["GET"]),
            Route("/v1/channels", self.list_channels, methods=["GET"]),
            Route("/v1/channels", self.create_channel, methods=["POST"]),
            Route("/v1/dms", self.open_dm, methods=["POST"]),
            Route("/v1/channels/{channel_id}", self.get_channel, methods=["GET"]),
            Route("/v1/channels/{channel_id}/members", self.add_member, methods=["POST"]),
            Route("/v1/channels/{channel_id}/members/{user}", self.remove_member, methods=["DELETE"]),
            Route("/v1/channels/{channel_id}/messages", self.post_message, methods=["POST"]),
            Route("/v1/channels/{channel_id}/messages", self.get_messages, methods=["GET"]),
            Route("/v1/presence", self.get_presence, methods=["GET"]),
            Route("/v1/channels/{channel_id}/presence", self.channel_presence, methods=["GET"]),
        ]

    async def _body(self, request: Request) -> dict[str, Any]:
        return await read_json_object(request, cap=self._body_cap)

    # Health

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        failing = await self._node.readiness()
        if failing:
            return JSONResponse({"status": "unavailable", "failing": failing}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def info(self, request: Request) -> Response:
        """What the web client needs to know before signing in."""
        s = self._settings
        return JSONResponse(
            {
                "node_id": s.node_id,
                "dev_login": self._dev_tokens is not None,
                "max_message_chars": s.max_message_chars,
                "group_max_members": s.group_max_members,
            }
        )

    async def dev_token(self, request: Request) -> Response:
        """Development sign-in by user name (only with a generated dev secret, never in production).

        ``"admin": true`` mints an operator's token (the ops dashboard's sign-in), and only for a
        caller on this machine: a development node reachable from a network must not hand the
        power to change every node's settings to anyone who can reach it."""
        if self._dev_tokens is None:
            raise NotFound("development sign-in is disabled on this node")
        body = await self._body(request)
        user = commands.user_id(body.get("user"))
        admin = body.get("admin", False)
        if not isinstance(admin, bool):
            raise BadRequest("admin must be true or false")
        if admin and not is_loopback(request):
            raise Forbidden("an admin can sign in by name only from the node's own machine")
        return JSONResponse({"token": self._dev_tokens(user, ("admin",) if admin else ()), "user": user})

    # Discovery

    async def connect(self, request: Request) -> Response:
        """The node the caller should open its socket on: the same one from every node while it
        is healthy (``unavailable`` + retry_after_ms when no node can take them now)."""
        principal = self._auth.request(request)
        node = self._node.assign(principal.user)
        return JSONResponse({"url": node.url, "node_id": node.node_id})

    # Channels

    async def list_channels(self, request: Request) -> Response:
        principal = self._auth.request(request)
        page, next_cursor = await self._channels.list_for(principal, commands.list_channels(request.query_params))
        body = []
        for channel, position in page:
            wire = channel.to_wire()
            wire["last_read"] = None if position is None else str(position)
            body.append(wire)
        return JSONResponse({"channels": body, "next_cursor": None if next_cursor is None else str(next_cursor)})

    async def create_channel(self, request: Request) -> Response:
        principal = self._auth.request(request)
        view = await self._channels.create(principal, commands.create_channel(await self._body(request)))
        return JSONResponse({"channel": _channel(view, with_count=False)}, status_code=201)

    async def open_dm(self, request: Request) -> Response:
        principal = self._auth.request(request)
        view, created = await self._channels.open_dm(principal, commands.open_dm(await self._body(request)))
        return JSONResponse({"channel": _channel(view, with_count=False)}, status_code=201 if created else 200)

    async def get_channel(self, request: Request) -> Response:
        principal = self._auth.request(request)
        view = await self._channels.get(principal, _channel_param(request))
        return JSONResponse({"channel": _channel(view, with_count=True)})

    async def add_member(self, request: Request) -> Response:
        principal = self._auth.request(request)
        command = commands.add_member(_channel_param(request), await self._body(request))
        user, result = await self._channels.add_member(principal, command)
        return JSONResponse({"result": result.value, "user": user})

    async def remove_member(self, request: Request) -> Response:
        principal = self._auth.request(request)
        await self._channels.remove_member(principal, commands.remove_member(_channel_param(request), request.path_params["user"]))
        return Response(status_code=204)

    # Messages

    async def post_message(self, request: Request) -> Response:
        principal = self._auth.request(request)
        channel = _channel_param(request)
        command = commands.send(await self._body(request), None, channel=channel, max_chars=self._settings.max_message_chars)
        message, created = await self._messages.send(principal, command)
        return JSONResponse({"message": message.to_wire()}, status_code=201 if created else 200)

    async def get_messages(self, request: Request) -> Response:
        principal = self._auth.request(request)
        command = commands.history_query(_channel_param(request), request.query_params)
        page = await self._messages.history(principal, command)
        return JSONResponse({"messages": [m.to_wire() for m in page.messages], "has_more": page.has_more})


    # Presence

    async def get_presence(self, request: Request) -> Response:
        """``?user=a&user=b`` → each user's status and last_seen, the same from every node."""
        self._auth.request(request)
        users = commands.presence_users_query(request.query_params.getlist("user"))
        states = await self._presence.query(users)
        return JSONResponse({"users": {u: p.to_wire() for u, p in states.items()}})

    async def channel_presence(self, request: Request) -> Response:
        """Members only: how many members are online, and up to 100 of them."""
        principal = self._auth.request(request)
        members, complete = await self._channels.members_sample(principal, _channel_param(request))
        body = (await self._presence.online_among(members)).to_wire()
        if not complete:
            body["sampled"] = True  # a room past MEMBERS_SAMPLED members: counted among the first ones
        return JSONResponse(body)


def _channel_param(request: Request) -> int:
    return commands.channel_ref(request.path_params["channel_id"])


def _channel(view: ChannelView, *, with_count: bool) -> dict[str, Any]:
    body = view.channel.to_wire(view.members)
    if with_count:
        body["member_count"] = view.member_count
    return body


# Error mapping: every failure leaves as the protocol's error body.


async def chat_error_handler(request: Request, exc: Exception) -> Response:
    """ChatError, and the presence and discovery packages' own errors (see errors.translate)."""
    return error_response(translate(exc))


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: ChatError = NotFound("no such endpoint")
    elif exc.status_code == 401:
        error = Unauthorized(str(exc.detail))
    else:
        error = BadRequest(str(exc.detail))
    response = error_response(error)
    response.status_code = exc.status_code
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    return error_response(Internal("internal error"))
