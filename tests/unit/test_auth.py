from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from chat.auth import TokenVerifier, issue_token
from chat.config import from_env
from chat.errors import Unauthorized

SECRET = "s" * 40


@pytest.fixture
def settings():
    return from_env({"CHAT_JWT_SECRET": SECRET})


def encode(claims: dict, key: str = SECRET, alg: str = "HS256", headers: dict | None = None) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def claims(**over: object) -> dict:
    # Far enough ahead that tokens built at collection time are still valid when a slow run gets to them.
    base = {"sub": "alice", "aud": "chat", "exp": int(time.time()) + 3600}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def test_good_token(settings) -> None:
    p = TokenVerifier(settings).verify(encode(claims(roles=["bot", "wizard"])))
    assert p.user == "alice" and p.roles == frozenset({"bot"})


def test_issue_token_round_trips(settings) -> None:
    token = issue_token(settings, "bob", roles=("admin",), ttl_s=60)
    p = TokenVerifier(settings).verify(token)
    assert p.user == "bob" and p.is_admin


def _b64(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def _alg_none_token() -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims())}."


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (encode(claims(exp=int(time.time()) - 3600)), "expired"),
        (encode(claims(aud="other")), "audience"),
        (encode(claims(aud=None)), "aud"),
        (encode(claims(exp=None)), "exp"),
        (encode(claims(sub=None)), "sub"),
        (encode(claims(sub="bad user!")), "subject"),
        (encode(claims(sub="x" * 65)), "subject"),
        (encode(claims(roles="admin")), "roles"),
        (encode(claims(), key="wrong" * 10), "signature"),
        (encode(claims(), key="k" * 64, alg="HS512"), "algorithm"),
        (_alg_none_token(), ""),
        ("not.a.jwt", "malformed"),
        ("garbage", "malformed"),
        ("", "missing"),
        ("a" * 10_000, "too large"),
    ],
)
def test_refused_tokens(settings, token: str, reason: str) -> None:
    with pytest.raises(Unauthorized) as error:
        TokenVerifier(settings).verify(token)
    assert reason in error.value.message


def test_public_key_algorithms_refuse_hmac_confusion(tmp_path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    settings = from_env({"CHAT_JWT_ALGORITHMS": "EdDSA", "CHAT_JWT_PUBLIC_KEY": public_pem})
    verifier = TokenVerifier(settings)
    good = jwt.encode(claims(), private, algorithm="EdDSA")
    assert verifier.verify(good).user == "alice"
    # The classic confusion attack: sign HS256 with the public key as the secret
    # (built by hand: pyjwt itself refuses to sign HMAC with a PEM key).
    header = _b64({"alg": "HS256", "typ": "JWT"})
    payload = _b64(claims())
    signature = hmac.new(public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    with pytest.raises(Unauthorized) as error:
        verifier.verify(forged)
    assert "algorithm" in error.value.message


def test_leeway_is_small(settings) -> None:
    verifier = TokenVerifier(settings)
    assert verifier.verify(encode(claims(exp=int(time.time()) - 10))).user == "alice"
    with pytest.raises(Unauthorized):
        verifier.verify(encode(claims(exp=int(time.time()) - 120)))
