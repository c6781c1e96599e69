"""JWT verification (and minting of development tokens).

Refused: ``alg: none``, any algorithm outside the configured allow-list, a missing
``exp``/``sub``/``aud``, a wrong audience, a bad signature, an expired token (beyond a
small leeway), a ``sub`` that is not a valid user ID.
"""

from __future__ import annotations

import time
from typing import Any

import jwt

from chat.commands import valid_user_id
from chat.config import Settings
from chat.errors import Unauthorized
from chat.models import Principal

KNOWN_ROLES = frozenset({"bot", "admin"})
MAX_TOKEN_BYTES = 8192  # a JWT larger than this is not ours; refuse before parsing


class TokenVerifier:
    """Turns a bearer token into a :class:`Principal` or raises :class:`Unauthorized`."""

    def __init__(self, settings: Settings) -> None:
        self._algorithms = list(settings.jwt_algorithms)
        # HS* verify with the shared secret, everything else with the public key.
        self._key: Any = settings.jwt_public_key or settings.jwt_secret
        self._audience = settings.jwt_audience
        self._leeway = min(settings.jwt_leeway_s, 60)

    def verify(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("missing token")
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized("token too large")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("token audience is not accepted") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized("token algorithm is not allowed") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("token signature is invalid") from None
        except jwt.PyJWTError:
            raise Unauthorized("token is malformed") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not valid_user_id(sub):
            raise Unauthorized("token subject is not a valid user id")
        roles = claims.get("roles") or []
        if not isinstance(roles, list):
            raise Unauthorized("token roles must be a list")
        return Principal(user=sub, roles=frozenset(r for r in roles if r in KNOWN_ROLES))


def issue_token(
    settings: Settings,
    user: str,
    *,
    roles: tuple[str, ...] = (),
    ttl_s: int = 24 * 3600,
    now: float | None = None,
) -> str:
    """Mint an HS* token with the configured secret (development and tests)."""
    if not valid_user_id(user):
        raise ValueError(f"invalid user id {user!r}: 1-64 characters of [A-Za-z0-9_.-]")
    if not settings.jwt_secret:
        raise ValueError("no CHAT_JWT_SECRET: tokens for public-key algorithms come from your identity provider")
    alg = next((a for a in settings.jwt_algorithms if a.startswith("HS")), None)
    if alg is None:
        raise ValueError("no HS* algorithm in CHAT_JWT_ALGORITHMS")
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"sub": user, "aud": settings.jwt_audience, "iat": issued, "exp": issued + ttl_s}
    if roles:
        claims["roles"] = list(roles)
    return jwt.encode(claims, settings.jwt_secret, algorithm=alg)
