"""The token verifier (svckit.auth) against a local issuer's key: no server, no external tool."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key: the JWKS server's, and the client's only CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "jwks.crt", directory / "jwks.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class JwksServer:
    """An https JWKS endpoint; `failing` makes it answer 503, as an issuer having an outage."""

    uri: str
    client_tls: ssl.SSLContext
    hits: list[int] = field(default_factory=list)
    failing: bool = False


@pytest.fixture
def jwks_server(issuer: LocalIssuer, tmp_path: Path) -> Iterator[JwksServer]:
    body = json.dumps(issuer.jwks()).encode()
    cert, key = self_signed(tmp_path)
    state = JwksServer("", ssl.create_default_context(cafile=str(cert)))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            state.hits.append(1)
            self.send_response(503 if state.failing else 200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}" if state.failing else body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    server.socket = server_tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.uri = f"https://127.0.0.1:{server.server_address[1]}/jwks.json"
    try:
        yield state
    finally:
        server.shutdown()


def test_jwks_from_a_uri_is_cached(issuer: LocalIssuer, jwks_server: JwksServer) -> None:
    uri = jwks_server.uri
    verifier = TokenVerifier(
        AuthConfig(LOCAL_ISSUER, LOCAL_AUDIENCE, uri),
        JwksCache(uri, max_age=300, min_refresh=300, ssl_context=jwks_server.client_tls),
    )

    async def many() -> None:
        for _ in range(20):
            await verifier.verify(issuer.customer("c"))
        stranger = LocalIssuer.ensure(tempfile.mkdtemp())
        for _ in range(5):  # unknown kids do not make it fetch again within min_refresh
            with pytest.raises(Unauthenticated):
                await verifier.verify(stranger.customer("c"))

    asyncio.run(many())
    assert len(jwks_server.hits) == 1


@pytest.mark.parametrize(
    "uri", ["http://idp.example.com/jwks.json", "HTTP://idp/jwks", "ftp://idp/jwks"]
)
def test_a_jwks_uri_that_is_not_https_or_a_file_is_refused(uri: str) -> None:
    """Keys fetched over plain http can be swapped in transit for the attacker's own."""
    env = {"AUTH_ISSUER": "https://idp", "AUTH_AUDIENCE": "api", "AUTH_JWKS_URI": uri}
    with pytest.raises(ValueError, match="https"):
        AuthConfig.from_env(env)
    with pytest.raises(ValueError, match="https"):
        JwksCache(uri)
    for fine in ("/etc/jwks.json", "file:///etc/jwks.json", "https://idp/jwks"):
        assert AuthConfig.from_env({**env, "AUTH_JWKS_URI": fine}).jwks_uri == fine


def test_a_remembered_token_stops_working_when_its_key_leaves_the_jwks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issuer withdraws a key: a token it signed, verified a moment ago and remembered,
    is refused at the next call, not up to VERIFIED_TTL_SECONDS later."""
    monkeypatch.setattr(auth, "FILE_CHECK_SECONDS", 0.0)
    old = LocalIssuer.ensure(tmp_path / "old")
    new = LocalIssuer.ensure(tmp_path / "new")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": old.jwks()["keys"] + new.jwks()["keys"]}))
    verifier = TokenVerifier(AuthConfig(LOCAL_ISSUER, LOCAL_AUDIENCE, str(jwks)))
    token = old.customer("c")
    assert verify(verifier, token).subject == "c"
    assert verify(verifier, token).subject == "c"  # from memory
    jwks.write_text(json.dumps(new.jwks()) + "\n")
    with pytest.raises(Unauthenticated, match="unknown key"):
        verify(verifier, token)
    assert verify(verifier, new.customer("c")).subject == "c"


def test_keys_age_out_while_the_jwks_cannot_be_fetched(
    issuer: LocalIssuer, jwks_server: JwksServer
) -> None:
    """An outage of the issuer's JWKS keeps the keys in use for `max_stale` at most (the
    same holds for a remembered token), then every token is refused until it answers."""
    uri = jwks_server.uri
    cache = JwksCache(
        uri, max_age=0.2, min_refresh=0.1, max_stale=1.0, ssl_context=jwks_server.client_tls
    )
    verifier = TokenVerifier(AuthConfig(LOCAL_ISSUER, LOCAL_AUDIENCE, uri), cache)
    remembered = issuer.customer("c")

    async def scenario() -> None:
        assert (await verifier.verify(remembered)).subject == "c"
        jwks_server.failing = True
        await asyncio.sleep(0.4)
        assert (await verifier.verify(issuer.customer("c"))).subject == "c"  # stale, in bound
        fetched = len(jwks_server.hits)
        assert fetched >= 2  # the failed fetch was tried
        await asyncio.sleep(0.8)
        for token in (remembered, issuer.customer("c")):
            with pytest.raises(Unauthenticated, match="signing keys are unavailable"):
                await verifier.verify(token)
        jwks_server.failing = False
        await asyncio.sleep(0.15)  # past min_refresh: the next call fetches again
        assert (await verifier.verify(remembered)).subject == "c"

    asyncio.run(scenario())


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

    import jwt

    verifier = TokenVerifier(dataclasses.replace(issuer.config(), leeway_seconds=0))
    # Whole seconds, from a whole-second "now": it lives 3 to 4 s (at 1.5 it lived 0 to 1 s,
    # and a loaded CI found it expired at its first check).
    token = issuer.customer("c-short", ttl=4)
    assert verify(verifier, token).subject == "c-short"
    assert verify(verifier, token).subject == "c-short"  # from memory
    assert token in verifier._verified
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, exp - time.time()) + 0.2)
    with pytest.raises(Unauthenticated, match="token expired"):
        verify(verifier, token)
    assert token not in verifier._verified


def test_storefront_run_prints_no_token_and_the_console_link_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 25, finding 9: `storefront run` printed the console's link with an 8-hour staff
    token in it. It now says how to get one; `storefront token --console` prints a link whose
    token lasts LINK_TTL."""
    import re
    from types import SimpleNamespace

    import jwt

    from storefront_cli import console, system
    from storefront_cli.main import endpoints, main

    supervisor = SimpleNamespace(
        is_running=lambda name: name == console.CONSOLE,
        record=lambda name: SimpleNamespace(ready_port=8091),
    )
    stack = SimpleNamespace(
        supervisor=supervisor,
        run_dir=tmp_path,
        kafka_bootstrap="127.0.0.1:9092",
        external_kafka=True,
        env=lambda: {"MONGODB_URI": "mongodb://operator@127.0.0.1:27017/"},
    )
    shown = endpoints(system.SystemPorts(), stack)  # type: ignore[arg-type]
    assert not re.search(r"eyJ[\w-]+\.[\w-]+\.", shown)  # no JWT anywhere
    assert f"storefront token --console --run-dir {tmp_path} --console-port 8091" in shown

    assert main(["token", "--console", "--run-dir", str(tmp_path), "--console-port", "8091"]) == 0
    link = capsys.readouterr().out.strip()
    assert link.startswith("http://127.0.0.1:8091/#token=")
    token = link.split("#token=", 1)[1]
    verifier = TokenVerifier(LocalIssuer.ensure(tmp_path / "auth").config())
    assert verify(verifier, token).roles == {"operator"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == console.LINK_TTL <= 15 * 60
