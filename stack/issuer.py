"""The local token issuer: a running stack is its own identity provider.

`storefront run` (and the test and bench fixtures) keep an ES256 signing key and its public
JWKS in `<run dir>/auth/`, never in the repository: Envoy's jwt_authn filter and the services
read `jwks.json`, and `storefront token` mints tokens with `signing-key.pem`. A real identity
provider replaces all of this by configuration (AUTH_ISSUER, AUTH_AUDIENCE, AUTH_JWKS_URI;
docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from stack.private import create_private, private_dir
from svckit.auth import AuthConfig

LOCAL_ISSUER = "https://issuer.storefront.local"
LOCAL_AUDIENCE = "storefront"
ALGORITHM = "ES256"
DEFAULT_TTL = 3600
KEY_FILE = "signing-key.pem"
JWKS_FILE = "jwks.json"


class LocalIssuer:
    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey) -> None:
        self.directory = directory
        self._key = key
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = hashlib.sha256(public).hexdigest()[:16]

    @classmethod
    def ensure(cls, directory: Path | str) -> LocalIssuer:
        """The issuer of `directory`, creating its key and JWKS the first time."""
        directory = Path(directory)
        private_dir(directory)
        key_path = directory / KEY_FILE
        if not key_path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            create_private(key_path, pem)
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC private key")
        issuer = cls(directory, loaded)
        jwks = json.dumps(issuer.jwks(), indent=2)
        if not issuer.jwks_path.exists() or issuer.jwks_path.read_text() != jwks:
            tmp = issuer.jwks_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(jwks)
            tmp.replace(issuer.jwks_path)
        return issuer

    @property
    def jwks_path(self) -> Path:
        return self.directory / JWKS_FILE

    def jwks(self) -> dict[str, Any]:
        public = ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}]}

    def config(self) -> AuthConfig:
        return AuthConfig(
            issuer=LOCAL_ISSUER, audience=LOCAL_AUDIENCE, jwks_uri=str(self.jwks_path.resolve())
        )

    def token(
        self, subject: str, roles: list[str], *, ttl: float = DEFAULT_TTL, **claims: Any
    ) -> str:
        """A signed access token; `claims` override or add to the standard ones."""
        now = int(time.time())
        payload = {
            "iss": LOCAL_ISSUER,
            "aud": LOCAL_AUDIENCE,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl),
            "jti": uuid.uuid4().hex,
            "roles": roles,
            **claims,
        }
        return jwt.encode(payload, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def customer(self, customer_id: str, *, ttl: float = DEFAULT_TTL) -> str:
        return self.token(customer_id, ["customer"], ttl=ttl)

    def role(self, role: str, *, ttl: float = DEFAULT_TTL, subject: str = "") -> str:
        """A staff or warehouse token; the subject names the person or tool (for the logs)."""
        return self.token(subject or f"local-{role}", [role], ttl=ttl)


def for_run_dir(run_dir: Path | str) -> LocalIssuer:
    return LocalIssuer.ensure(Path(run_dir) / "auth")
