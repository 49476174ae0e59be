"""Bearer tokens: who is calling.

Every RPC but health and reflection carries `authorization: Bearer <JWT>`. The token is
checked here with PyJWT (signature against the issuer's JWKS, issuer, audience, exp/nbf/iat
with a small leeway, and an algorithm allow-list), so a service trusts nothing the edge did:
a direct gRPC caller meets the same checks as one coming through Envoy or the Istio gateway.

Issuer, audience and where the JWKS is come from the environment (`AuthConfig.from_env`), so
production points at a real identity provider with no code change. The JWKS is a file (re-read
when it changes) or an http(s) URI (cached, re-fetched when old or when a token names a key id
it does not know, at most every `min_refresh` seconds).

Reasons given to callers and logs are our own fixed phrases, never PyJWT's messages, which
may quote parts of the token.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKSet

from svckit import envvars
from svckit.envvars import ConfigError
from svckit.errors import Unauthenticated

DEFAULT_ALGORITHMS = ("RS256", "ES256")
"""Asymmetric only: a shared-secret algorithm (HS*) or `none` is never accepted."""
LEEWAY_SECONDS = 30
"""Clock skew tolerated on exp, nbf and iat; Envoy's jwt_authn is given the same."""
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat")
FILE_CHECK_SECONDS = 1.0
"""How often a JWKS file is looked at for changes (a new key, a rotation)."""


@dataclass(frozen=True)
class AuthConfig:
    issuer: str
    audience: str
    jwks_uri: str
    """A file path, a file:// URI, or an http(s):// URI of the issuer's JWKS."""
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_seconds: float = LEEWAY_SECONDS
    roles_claim: str = "roles"
    """Claim holding the roles: a list or a space-separated string; dots walk into
    objects (e.g. "realm_access.roles" for Keycloak)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthConfig:
        """AUTH_ISSUER, AUTH_AUDIENCE and AUTH_JWKS_URI are required: a service never
        starts without knowing whom to trust."""
        env = os.environ if env is None else env
        missing = [k for k in ("AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_JWKS_URI") if not env.get(k)]
        if missing:
            raise ConfigError(f"authentication is not configured: set {', '.join(missing)}")
        algorithms = tuple(
            a.strip() for a in env.get("AUTH_ALGORITHMS", ",".join(DEFAULT_ALGORITHMS)).split(",")
        )
        unsafe = [a for a in algorithms if not a or a == "none" or a.startswith("HS")]
        if unsafe:
            raise ConfigError(f"AUTH_ALGORITHMS: {unsafe} are not allowed (asymmetric only)")
        return cls(
            issuer=env["AUTH_ISSUER"],
            audience=env["AUTH_AUDIENCE"],
            jwks_uri=env["AUTH_JWKS_URI"],
            algorithms=algorithms,
            leeway_seconds=envvars.number(env, "AUTH_LEEWAY_SECONDS", LEEWAY_SECONDS, minimum=0),
            roles_claim=env.get("AUTH_ROLES_CLAIM", "roles"),
        )

    def env(self) -> dict[str, str]:
        """The environment that makes `from_env` return this config (for child processes)."""
        return {
            "AUTH_ISSUER": self.issuer,
            "AUTH_AUDIENCE": self.audience,
            "AUTH_JWKS_URI": self.jwks_uri,
            "AUTH_ALGORITHMS": ",".join(self.algorithms),
            "AUTH_LEEWAY_SECONDS": f"{self.leeway_seconds:g}",
            "AUTH_ROLES_CLAIM": self.roles_claim,
        }


@dataclass(frozen=True)
class Principal:
    """The verified caller: `subject` is the token's sub (a customer's id for customers)."""

    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)

    def __str__(self) -> str:
        return f"{self.subject} ({','.join(sorted(self.roles)) or 'no role'})"


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The token of the `authorization: Bearer ...` header; Unauthenticated if there is none."""
    values = [v for k, v in metadata or () if k.lower() == "authorization"]
    if not values:
        raise Unauthenticated("missing bearer token")
    if len(values) > 1:
        raise Unauthenticated("more than one authorization header")
    value = values[0].decode() if isinstance(values[0], bytes) else values[0]
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization is not a bearer token")
    return token.strip()


class JwksCache:
    """The issuer's signing keys, from a file or an http(s) URI, kept fresh."""

    def __init__(self, uri: str, *, max_age: float = 300.0, min_refresh: float = 30.0) -> None:
        self._uri = uri
        self._max_age = max_age
        self._min_refresh = min_refresh
        self._keys: list[PyJWK] = []
        self._checked_at = float("-inf")
        self._version: object = None
        self._lock = asyncio.Lock()

    @property
    def _path(self) -> Path | None:
        if self._uri.startswith(("http://", "https://")):
            return None
        return Path(self._uri.removeprefix("file://"))

    def _read(self) -> tuple[object, dict[str, Any] | None]:
        """(version, JWKS document); the document is None when the version did not change."""
        path = self._path
        if path is not None:
            stat = path.stat()
            version: object = (stat.st_mtime_ns, stat.st_size)
            if version == self._version:
                return version, None
            return version, json.loads(path.read_text())
        with urllib.request.urlopen(self._uri, timeout=5) as reply:  # noqa: S310 - configured URI
            return time.monotonic(), json.loads(reply.read())

    def _due(self, force: bool) -> bool:
        age = time.monotonic() - self._checked_at
        if self._path is not None:
            return age >= FILE_CHECK_SECONDS  # a stat is cheap; re-read only on change
        return age >= self._max_age or (force and age >= self._min_refresh)

    async def _refresh(self, *, force: bool) -> None:
        if not self._due(force):
            return
        async with self._lock:
            if not self._due(force):
                return  # another caller refreshed while we waited
            try:
                version, document = await asyncio.to_thread(self._read)
            except (OSError, ValueError, jwt.PyJWKSetError) as exc:
                if not self._keys:
                    raise Unauthenticated("signing keys are unavailable") from exc
                return  # keep serving with the keys we have
            finally:
                self._checked_at = time.monotonic()
            if document is not None:
                self._keys = list(PyJWKSet.from_dict(document).keys)
                self._version = version

    async def keys_for(self, kid: str | None, algorithm: str) -> list[PyJWK]:
        """Keys that could have signed a token with this header: by kid when it has one."""
        await self._refresh(force=False)
        found = self._match(kid, algorithm)
        if not found and kid is not None:
            await self._refresh(force=True)  # a new key may have been published
            found = self._match(kid, algorithm)
        return found

    def _match(self, kid: str | None, algorithm: str) -> list[PyJWK]:
        return [
            k
            for k in self._keys
            if (kid is None or k.key_id == kid) and k.algorithm_name == algorithm
        ]


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def roles_of(claims: Mapping[str, Any], path: str) -> frozenset[str]:
    value = _claim(claims, path)
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


# PyJWT's exception -> what we tell the caller. Order matters: subclasses first.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidIssuerError, "token from another issuer"),
    (jwt.InvalidAudienceError, "token for another audience"),
    (jwt.MissingRequiredClaimError, "token lacks a required claim"),
    (jwt.InvalidSignatureError, "bad token signature"),
    (jwt.DecodeError, "malformed token"),
)


VERIFIED_TTL_SECONDS = 60.0
"""How long a token already verified is trusted without checking its signature again (never
past its own expiry). Below the JWKS cache's refresh time, so a removed key stops working no
later than it did without this cache."""
VERIFIED_MAX = 20_000


class TokenVerifier:
    def __init__(self, config: AuthConfig, jwks: JwksCache | None = None) -> None:
        self.config = config
        self._jwks = jwks or JwksCache(config.jwks_uri)
        # token -> (principal, trusted until): a client sends the same token with every call,
        # and an ES256/RS256 check costs more than the rest of a GetCustomer's Python.
        self._verified: dict[str, tuple[Principal, float]] = {}

    async def verify(self, token: str) -> Principal:
        now = time.time()
        known = self._verified.get(token)
        if known is not None:
            if now < known[1]:
                return known[0]
            del self._verified[token]
        principal, expires = await self._verify(token)
        if len(self._verified) >= VERIFIED_MAX:
            self._verified.pop(next(iter(self._verified)))  # the oldest
        self._verified[token] = (
            principal,
            min(now + VERIFIED_TTL_SECONDS, expires + self.config.leeway_seconds),
        )
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated("malformed token") from exc
        algorithm = header.get("alg")
        if algorithm not in self.config.algorithms:
            raise Unauthenticated("token algorithm not accepted")
        kid = header.get("kid")
        keys = await self._jwks.keys_for(kid if isinstance(kid, str) else None, algorithm)
        if not keys:
            raise Unauthenticated("token signed with an unknown key")
        claims = self._decode(token, keys, algorithm)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("token has no subject")
        return Principal(subject, roles_of(claims, self.config.roles_claim)), float(claims["exp"])

    def _decode(self, token: str, keys: list[PyJWK], algorithm: str) -> dict[str, Any]:
        reason = "bad token signature"
        for key in keys:
            try:
                return jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self.config.audience,
                    issuer=self.config.issuer,
                    leeway=self.config.leeway_seconds,
                    options={"require": list(REQUIRED_CLAIMS)},
                )
            except jwt.InvalidTokenError as exc:
                reason = next((r for cls, r in _REASONS if isinstance(exc, cls)), "invalid token")
                if not isinstance(exc, jwt.InvalidSignatureError):
                    break  # the signature was good: another key will not change the verdict
        raise Unauthenticated(reason)
