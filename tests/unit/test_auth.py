"""The token verifier (svckit.auth) against a local issuer's key: no server, no external tool."""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stack.issuer import LOCAL_AUDIENCE, LOCAL_ISSUER, LocalIssuer
from svckit import auth
from svckit.auth import AuthConfig, JwksCache, Principal, TokenVerifier, bearer_token
from svckit.errors import Unauthenticated
from tests.tokens import attacks


@pytest.fixture(scope="module")
def issuer() -> LocalIssuer:
    return LocalIssuer.ensure(tempfile.mkdtemp(prefix="auth-unit-"))


@pytest.fixture
def verifier(issuer: LocalIssuer) -> TokenVerifier:
    return TokenVerifier(issuer.config())


def verify(verifier: TokenVerifier, token: str) -> Principal:
    return asyncio.run(verifier.verify(token))


def test_a_valid_token_gives_its_subject_and_roles(
    issuer: LocalIssuer, verifier: TokenVerifier
) -> None:
    assert verify(verifier, issuer.customer("c-42")) == Principal("c-42", frozenset({"customer"}))
    staff = verify(verifier, issuer.role("staff", subject="alice"))
    assert staff == Principal("alice", frozenset({"staff"}))


EXPECTED_REASONS = {
    "expired": "token expired",
    "not yet valid": "token not yet valid",
    "wrong issuer": "token from another issuer",
    "wrong audience": "token for another audience",
    "no expiry": "token lacks a required claim",
    "alg none": "token algorithm not accepted",
    "HS256 with the public key": "token algorithm not accepted",
    "tampered payload": "bad token signature",
    "unknown kid": "token signed with an unknown key",
    "our kid, another key": "bad token signature",
    "garbage": "malformed token",
    "three dots of garbage": "malformed token",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_REASONS))
def test_attacks_are_unauthenticated_for_their_reason(
    issuer: LocalIssuer, verifier: TokenVerifier, name: str
) -> None:
    token = attacks(issuer, "c-42", ["customer"])[name]
    with pytest.raises(Unauthenticated) as err:
        verify(verifier, token)
    assert err.value.message == EXPECTED_REASONS[name]
    assert token not in err.value.message


def test_every_attack_is_covered() -> None:
    issuer = LocalIssuer.ensure(tempfile.mkdtemp())
    assert set(attacks(issuer, "c", ["customer"])) == set(EXPECTED_REASONS)


def test_leeway_tolerates_small_clock_skew(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    assert verify(verifier, issuer.customer("c-1", ttl=-(auth.LEEWAY_SECONDS - 5))).subject == "c-1"
    with pytest.raises(Unauthenticated, match="token expired"):
        verify(verifier, issuer.customer("c-1", ttl=-(auth.LEEWAY_SECONDS + 5)))


def test_a_token_without_subject_is_refused(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthenticated):
        verify(verifier, issuer.token("", ["staff"]))


def test_roles_claim_may_be_nested_or_a_scope_string(issuer: LocalIssuer) -> None:
    nested = TokenVerifier(
        AuthConfig(**{**issuer.config().__dict__, "roles_claim": "realm_access.roles"})
    )
    token = issuer.token("s-1", [], realm_access={"roles": ["staff", "offline_access"]})
    assert verify(nested, token).roles == {"staff", "offline_access"}
    scoped = TokenVerifier(AuthConfig(**{**issuer.config().__dict__, "roles_claim": "scope"}))
    assert verify(scoped, issuer.token("w-1", [], scope="warehouse read")).roles == {
        "warehouse",
        "read",
    }


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ([("authorization", "Bearer abc.def.ghi")], "abc.def.ghi"),
        ([("Authorization", "bearer  xyz ")], "xyz"),
    ],
)
def test_bearer_token_is_read_from_the_authorization_header(
    metadata: list[tuple[str, str]], expected: str
) -> None:
    assert bearer_token(metadata) == expected


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [],
        [("authorization", "Basic dXNlcjpwYXNz")],
        [("authorization", "Bearer ")],
        [("authorization", "Bearer a"), ("authorization", "Bearer b")],
    ],
)
def test_no_usable_bearer_header_is_unauthenticated(metadata: list[tuple[str, str]]) -> None:
    with pytest.raises(Unauthenticated):
        bearer_token(metadata)


def test_config_comes_from_the_environment_and_is_required() -> None:
    env = {"AUTH_ISSUER": "https://idp", "AUTH_AUDIENCE": "api", "AUTH_JWKS_URI": "/k.json"}
    config = AuthConfig.from_env(env)
    assert (config.issuer, config.audience, config.jwks_uri) == ("https://idp", "api", "/k.json")
    assert config.algorithms == ("RS256", "ES256")
    assert AuthConfig.from_env(config.env()) == config
    with pytest.raises(ValueError, match="AUTH_JWKS_URI"):
        AuthConfig.from_env({k: v for k, v in env.items() if k != "AUTH_JWKS_URI"})
    for unsafe in ("HS256", "none", "RS256,HS512"):
        with pytest.raises(ValueError, match="asymmetric"):
            AuthConfig.from_env({**env, "AUTH_ALGORITHMS": unsafe})


def test_a_rotated_key_in_the_jwks_file_is_picked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "FILE_CHECK_SECONDS", 0.0)
    old = LocalIssuer.ensure(tmp_path / "old")
    new = LocalIssuer.ensure(tmp_path / "new")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(old.jwks()))
    verifier = TokenVerifier(AuthConfig(LOCAL_ISSUER, LOCAL_AUDIENCE, str(jwks)))
    assert verify(verifier, old.customer("c")).subject == "c"
    with pytest.raises(Unauthenticated, match="unknown key"):
        verify(verifier, new.customer("c"))
    jwks.write_text(json.dumps({"keys": old.jwks()["keys"] + new.jwks()["keys"]}) + "\n")
    assert verify(verifier, new.customer("c")).subject == "c"


@pytest.fixture
def jwks_server(issuer: LocalIssuer) -> Iterator[tuple[str, list[int]]]:
    hits: list[int] = []
    body = json.dumps(issuer.jwks()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            hits.append(1)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", hits
    finally:
        server.shutdown()


def test_jwks_from_a_uri_is_cached(
    issuer: LocalIssuer, jwks_server: tuple[str, list[int]]
) -> None:
    uri, hits = jwks_server
    verifier = TokenVerifier(
        AuthConfig(LOCAL_ISSUER, LOCAL_AUDIENCE, uri),
        JwksCache(uri, max_age=300, min_refresh=300),
    )

    async def many() -> None:
        for _ in range(20):
            await verifier.verify(issuer.customer("c"))
        stranger = LocalIssuer.ensure(tempfile.mkdtemp())
        for _ in range(5):  # unknown kids do not make it fetch again within min_refresh
            with pytest.raises(Unauthenticated):
                await verifier.verify(stranger.customer("c"))

    asyncio.run(many())
    assert len(hits) == 1


def test_unreachable_keys_are_unauthenticated_not_a_crash(issuer: LocalIssuer) -> None:
    verifier = TokenVerifier(AuthConfig(LOCAL_ISSUER, LOCAL_AUDIENCE, "/nonexistent/jwks.json"))
    with pytest.raises(Unauthenticated, match="signing keys are unavailable"):
        verify(verifier, issuer.customer("c"))


def test_storefront_token_prints_tokens_the_run_dirs_issuer_signed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from storefront_cli.main import main

    assert main(["token", "--role", "warehouse", "--ttl", "60", "--run-dir", str(tmp_path)]) == 0
    warehouse = capsys.readouterr().out.strip()
    assert main(["token", "--customer", "c-9", "--run-dir", str(tmp_path)]) == 0
    customer = capsys.readouterr().out.strip()
    verifier = TokenVerifier(LocalIssuer.ensure(tmp_path / "auth").config())
    assert verify(verifier, warehouse).roles == {"warehouse"}
    assert verify(verifier, customer) == Principal("c-9", frozenset({"customer"}))
    assert (tmp_path / "auth" / "signing-key.pem").stat().st_mode & 0o077 == 0


def test_a_remembered_token_still_expires(issuer: LocalIssuer) -> None:
    """Verified tokens are remembered (no signature check per call), never past their exp."""
    import dataclasses
    import time

    verifier = TokenVerifier(dataclasses.replace(issuer.config(), leeway_seconds=0))
    token = issuer.customer("c-short", ttl=1.5)
    assert verify(verifier, token).subject == "c-short"
    assert verify(verifier, token).subject == "c-short"  # from memory
    assert token in verifier._verified
    time.sleep(2.1)
    with pytest.raises(Unauthenticated, match="token expired"):
        verify(verifier, token)
    assert token not in verifier._verified
