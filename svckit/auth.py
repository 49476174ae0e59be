"""Bearer tokens: who is calling.

Every RPC but health and reflection carries `authorization: Bearer <JWT>`. The token is
checked here with PyJWT (signature against the issuer's JWKS, issuer, audience, exp/nbf/iat
with a small leeway, and an algorithm allow-list), so a service trusts nothing the edge did:
a direct gRPC caller meets the same checks as one coming through Envoy or the Istio gateway.

Issuer, audience and where the JWKS is come from the environment (`AuthConfig.from_env`), so
production points at a real identity provider with no code change. The JWKS is a file (re-read
when it changes) or an https URI (cached, re-fetched when old or when a token names a key id
it does not know, at most every `min_refresh` seconds); plain http is refused, since whoever
can change the keys in transit can sign any token. Keys that cannot be confirmed (the file or
the URI fails) are used for at most `JWKS_MAX_STALE_SECONDS` after they last were, then
dropped: an issuer that withdraws a key cannot be kept from being heard for long.

Reasons given to callers and logs are our own fixed phrases, never PyJWT's messages, which
may quote parts of the token.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK

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
JWKS_MAX_AGE_SECONDS = 300.0
"""How long keys fetched from a URI are used before they are fetched again."""
JWKS_MIN_REFRESH_SECONDS = 30.0
"""The least time between two fetches (an unknown kid, a failed fetch retried)."""
JWKS_MAX_STALE_SECONDS = 900.0
"""How long keys are still used after they were last confirmed, while the JWKS cannot be read:
three refresh periods, each retried every JWKS_MIN_REFRESH_SECONDS. Past it every token is
refused until the JWKS answers again."""


def check_jwks_uri(uri: str) -> None:
    """A file path, file://, or https://: keys fetched over plain http could be anyone's."""
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    if scheme not in ("", "file", "https"):
        raise ValueError(f"AUTH_JWKS_URI must be a file or an https:// URI, not {scheme}://")


@dataclass(frozen=True)
class AuthConfig:
    issuer: str
    audience: str
    jwks_uri: str
    """A file path, a file:// URI, or an https:// URI of the issuer's JWKS."""
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

    def __post_init__(self) -> None:
        check_jwks_uri(self.jwks_uri)


@dataclass(frozen=True)
class Principal:
    """The verified caller: `subject` is the token's sub (a customer's id for customers)."""

    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)

    def __str__(self) -> str:
        return f"{self.subject} ({','.join(sorted(self.roles)) or 'no role'})"


Metadata = Iterable[tuple[str, str | bytes]]
"""gRPC invocation metadata (or HTTP headers as pairs): a key may come more than once."""


def headers_of(metadata: Metadata | None) -> dict[str, str]:
    """Metadata read once into a dict: keys lowercased, values as text, a key sent more than
    once with its values joined by ", " (as HTTP combines a repeated field). The server reads
    each call's metadata with this once, for the token and the caller's trace alike."""
    headers: dict[str, str] = {}
    for key, value in metadata or ():
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        key = key.lower()
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def bearer_token(metadata: Mapping[str, str] | Metadata | None) -> str:
    """The token of the `authorization: Bearer ...` header; Unauthenticated if there is none.

    `metadata` is the request's pairs, or what :func:`headers_of` made of them."""
    headers = metadata if isinstance(metadata, Mapping) else headers_of(metadata)
    value = headers.get("authorization")
    if value is None:
        raise Unauthenticated("missing bearer token")
    if "," in value:  # a token (RFC 6750 b64token) has no comma: the header came twice
        raise Unauthenticated("more than one authorization header")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization is not a bearer token")
    return token.strip()


def key_identity(jwk: Mapping[str, Any]) -> str:
    """What tells one published key from another: its JWK members, in a stable order."""
    return json.dumps(jwk, sort_keys=True, separators=(",", ":"))


def usable_keys(document: Any) -> dict[str, PyJWK]:
    """identity -> key for every key of a JWKS that this PyJWT can use (others are skipped,
    as PyJWKSet does); ValueError if there is none."""
    members = document.get("keys") if isinstance(document, Mapping) else None
    keys: dict[str, PyJWK] = {}
    for member in members if isinstance(members, list) else ():
        if not isinstance(member, dict):
            continue
        try:
            keys[key_identity(member)] = PyJWK(member)
        except jwt.PyJWTError:
            continue
    if not keys:
        raise ValueError("the JWKS holds no usable key")
    return keys


class JwksCache:
    """The issuer's signing keys, from a file or an https URI, kept fresh, aged out when they
    can no longer be confirmed."""

    def __init__(
        self,
        uri: str,
        *,
        max_age: float = JWKS_MAX_AGE_SECONDS,
        min_refresh: float = JWKS_MIN_REFRESH_SECONDS,
        max_stale: float = JWKS_MAX_STALE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        check_jwks_uri(uri)
        self._uri = uri
        self._max_age = max_age
        self._min_refresh = min_refresh
        self._max_stale = max_stale
        self._ssl = ssl_context
        self._keys: dict[str, PyJWK] = {}
        self._confirmed_at = float("-inf")
        """When the keys were last read or seen unchanged."""
        self._tried_at = float("-inf")
        self._next_check = float("-inf")
        self._version: object = None
        self._lock = asyncio.Lock()

    @property
    def _path(self) -> Path | None:
        if self._uri.lower().startswith("https://"):
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
        with urllib.request.urlopen(self._uri, timeout=5, context=self._ssl) as reply:  # noqa: S310
            return time.monotonic(), json.loads(reply.read())

    def due(self, force: bool = False) -> bool:
        """Whether the JWKS should be read again now."""
        now = time.monotonic()
        return now >= self._next_check or (force and now - self._tried_at >= self._min_refresh)

    async def refresh(self, *, force: bool = False) -> None:
        """Read the JWKS again if it is time to (or, with `force`, if it was not read in the
        last `min_refresh` seconds); keys not confirmed for `max_stale` are dropped."""
        if self.due(force):
            async with self._lock:
                if self.due(force):  # else another caller refreshed while we waited
                    await self._read_now()
        if self._keys and time.monotonic() - self._confirmed_at > self._max_stale:
            self._keys = {}

    async def _read_now(self) -> None:
        self._tried_at = time.monotonic()
        if not self._keys:
            self._version = None  # read the file whole even if it is as it was before
        try:
            version, document = await asyncio.to_thread(self._read)
            keys = usable_keys(document) if document is not None else self._keys
        except (OSError, ValueError) as exc:
            retry = FILE_CHECK_SECONDS if self._path is not None else self._min_refresh
            self._next_check = time.monotonic() + retry
            if not self._keys:
                raise Unauthenticated("signing keys are unavailable") from exc
            return  # keep the keys we have, until they are too stale
        now = time.monotonic()
        self._keys, self._version, self._confirmed_at = keys, version, now
        self._next_check = now + (FILE_CHECK_SECONDS if self._path is not None else self._max_age)

    def holds(self, identity: str) -> bool:
        """Whether the key `identity` is still among the current keys, and not too stale."""
        fresh = time.monotonic() - self._confirmed_at <= self._max_stale
        return fresh and identity in self._keys

    async def keys_for(self, kid: str | None, algorithm: str) -> list[tuple[str, PyJWK]]:
        """(identity, key) of the keys that could have signed a token with this header: by
        kid when it has one."""
        await self.refresh()
        found = self._match(kid, algorithm)
        if not found and kid is not None:
            await self.refresh(force=True)  # a new key may have been published
            found = self._match(kid, algorithm)
        if not found and not self._keys:
            raise Unauthenticated("signing keys are unavailable")
        return found

    def _match(self, kid: str | None, algorithm: str) -> list[tuple[str, PyJWK]]:
        return [
            (identity, k)
            for identity, k in self._keys.items()
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
past its own expiry, and never once the key that signed it has left the JWKS or aged out)."""
VERIFIED_MAX = 20_000


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    until: float
    key: str
    """The identity of the key that signed the token."""


class TokenVerifier:
    def __init__(self, config: AuthConfig, jwks: JwksCache | None = None) -> None:
        self.config = config
        self._jwks = jwks or JwksCache(config.jwks_uri)
        # A client sends the same token with every call, and an ES256/RS256 check costs more
        # than the rest of a GetCustomer's Python.
        self._verified: dict[str, _Verified] = {}

    async def verify(self, token: str) -> Principal:
        now = time.time()
        known = self._verified.get(token)
        if known is not None:
            if self._jwks.due():  # a cheap check first: this is every call's path
                await self._jwks.refresh()
            if now < known.until and self._jwks.holds(known.key):
                return known.principal
            del self._verified[token]
        principal, expires, key = await self._verify(token)
        if len(self._verified) >= VERIFIED_MAX:
            self._verified.pop(next(iter(self._verified)))  # the oldest
        until = min(now + VERIFIED_TTL_SECONDS, expires + self.config.leeway_seconds)
        self._verified[token] = _Verified(principal, until, key)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float, str]:
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
        claims, key = self._decode(token, keys, algorithm)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("token has no subject")
        principal = Principal(subject, roles_of(claims, self.config.roles_claim))
        return principal, float(claims["exp"]), key

    def _decode(
        self, token: str, keys: list[tuple[str, PyJWK]], algorithm: str
    ) -> tuple[dict[str, Any], str]:
        """The claims, and the identity of the key whose signature holds."""
        reason = "bad token signature"
        for identity, key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self.config.audience,
                    issuer=self.config.issuer,
                    leeway=self.config.leeway_seconds,
                    options={"require": list(REQUIRED_CLAIMS)},
                )
                return claims, identity
            except jwt.InvalidTokenError as exc:
                reason = next((r for cls, r in _REASONS if isinstance(exc, cls)), "invalid token")
                if not isinstance(exc, jwt.InvalidSignatureError):
                    break  # the signature was good: another key will not change the verdict
        raise Unauthenticated(reason)
