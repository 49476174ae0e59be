"""Forged, stale and broken bearer tokens: what every check of a token must refuse.

Each is built from a valid token of `issuer` by changing one thing, so a token refused here is
refused for that one reason. Used by the verifier's unit tests and by the end-to-end attack
tests (through Envoy and over direct gRPC).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import tempfile
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from stack.issuer import LOCAL_AUDIENCE, LOCAL_ISSUER, LocalIssuer


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def assemble(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)]
    )


def claims(subject: str, roles: list[str], **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_AUDIENCE,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "roles": roles,
        **overrides,
    }


def attacks(issuer: LocalIssuer, subject: str, roles: list[str]) -> dict[str, str]:
    """name -> a token the services and the edge must answer with UNAUTHENTICATED / 401.

    `subject` and `roles` are what a valid token would carry (so a token that slipped through
    would be allowed: the tests can tell a refused token from an unauthorized one)."""
    now = int(time.time())
    valid = issuer.token(subject, roles)
    header_b64, payload_b64, signature_b64 = valid.split(".")

    stranger = LocalIssuer.ensure(tempfile.mkdtemp(prefix="stranger-issuer-"))
    public_pem = (
        issuer._key.public_key()  # noqa: SLF001 - the attacker knows the public key
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    hs_header = {"alg": "HS256", "typ": "JWT", "kid": issuer.kid}
    hs_body = f"{b64(json.dumps(hs_header).encode())}.{payload_b64}"
    hs_signature = hmac.new(public_pem, hs_body.encode(), hashlib.sha256).digest()

    tampered = json.loads(unb64(payload_b64))
    tampered["roles"] = ["staff", "warehouse"]
    tampered["sub"] = subject + "-other"

    return {
        "expired": issuer.token(subject, roles, ttl=-120, iat=now - 3600, nbf=now - 3600),
        "not yet valid": issuer.token(subject, roles, nbf=now + 3600, iat=now),
        "wrong issuer": issuer.token(subject, roles, iss="https://issuer.example.com"),
        "wrong audience": issuer.token(subject, roles, aud="another-api"),
        "no expiry": jwt.encode(
            {k: v for k, v in claims(subject, roles).items() if k != "exp"},
            issuer._key,  # noqa: SLF001 - signed right, only the claim is missing
            algorithm="ES256",
            headers={"kid": issuer.kid},
        ),
        "alg none": assemble({"alg": "none", "typ": "JWT"}, claims(subject, roles)),
        "HS256 with the public key": f"{hs_body}.{b64(hs_signature)}",
        "tampered payload": f"{header_b64}.{b64(json.dumps(tampered).encode())}.{signature_b64}",
        "unknown kid": stranger.token(subject, roles),
        "our kid, another key": jwt.encode(
            claims(subject, roles),
            stranger._key,  # noqa: SLF001
            algorithm="ES256",
            headers={"kid": issuer.kid},
        ),
        "garbage": "garbage",
        "three dots of garbage": "a.b.c",
    }
