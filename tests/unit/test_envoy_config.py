"""The Envoy config renderer (checked by Envoy itself) and the generated API documents."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from envoy_config import config
from envoy_config.config import ConfigError, EdgeAuth, validate
from stack import tools
from stack.issuer import LocalIssuer

ROOT = Path(__file__).resolve().parents[2]
ISSUER = LocalIssuer.ensure(tempfile.mkdtemp(prefix="envoy-config-test-"))
AUTH = EdgeAuth.of(ISSUER.config())


def render(*args: Any, **kwargs: Any) -> str:
    return config.render(*args, auth=kwargs.pop("auth", AUTH), **kwargs)


def write_config(path: Path, **kwargs: Any) -> Path:
    return config.write_config(path, auth=AUTH, **kwargs)


needs_envoy = pytest.mark.skipif(not tools.available("envoy"), reason="envoy not installed")


def test_defaults_route_every_service_to_its_port() -> None:
    text = render()
    for name, service in config.SERVICES.items():
        host, port = config.DEFAULT_UPSTREAMS[name]
        assert f'prefix: "/{service}/"' in text
        assert f'cluster: "{name}"' in text
        assert f'{{address: "{host}", port_value: {port}}}' in text
        assert f'"{service}"' in text.split("services:", 1)[1].splitlines()[0]
    assert 'socket_address: {address: "127.0.0.1", port_value: 8080}' in text
    assert "${" not in text


def test_every_request_meets_jwt_authn_before_any_other_work() -> None:
    text = render()
    filters = text.split("http_filters:", 1)[1].split("clusters:", 1)[0]
    names = [line.split("name: ", 1)[1] for line in filters.splitlines() if "- name: " in line]
    # CORS only answers preflights (they carry no token); grpc_web only reframes gRPC-Web as
    # gRPC, so the token check sees it as any gRPC call.
    assert names == [
        "envoy.filters.http.cors",
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.local_ratelimit",  # per verified subject: after the token check
        "envoy.filters.http.lua",
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.router",
    ]
    assert f'issuer: "{AUTH.issuer}"' in filters
    assert 'audiences: ["storefront"]' in filters
    assert f'filename: "{Path(AUTH.jwks_path).resolve()}"' in filters
    assert "forward: true" in filters  # the services verify the token again
    # The header only: not jwt_authn's default `access_token` query parameter too.
    assert 'from_headers: [{name: authorization, value_prefix: "Bearer "}]' in filters
    assert "from_params" not in filters
    assert "require_expiration: true" in filters
    assert "requires: {provider_name: storefront}" in filters and 'prefix: "/"' in filters
    # The rate limit's key is the verified subject, from jwt_authn's metadata.
    assert f'payload_in_metadata: "{config.JWT_METADATA_KEY}"' in filters


def test_there_is_no_config_without_token_checks() -> None:
    with pytest.raises(TypeError):
        config.render()  # type: ignore[call-arg]
    with pytest.raises(ConfigError):
        render(auth=EdgeAuth("", ("storefront",), AUTH.jwks_path))
    with pytest.raises(ConfigError):
        EdgeAuth.of(ISSUER.config().__class__("iss", "aud", "https://idp.example/jwks"))


def test_cors_allows_exactly_the_configured_origins() -> None:
    default = render()
    assert '"allow_origin_string_match": [{"exact": "http://localhost:3000"}]' in default
    text = render(cors_origins=("https://shop.example.com", "http://127.0.0.1:5173"))
    assert '[{"exact": "https://shop.example.com"}, {"exact": "http://127.0.0.1:5173"}]' in text
    assert "grpc-status, grpc-message" in text  # a script may read a gRPC-Web error
    assert "CorsPolicy" not in render(cors_origins=())


@pytest.mark.parametrize(
    "origin", ["*", "http://*.example.com", "shop.example.com", "ftp://x", "http://x/path", ""]
)
def test_a_malformed_cors_origin_is_refused(origin: str) -> None:
    with pytest.raises(ConfigError, match="CORS origin"):
        render(cors_origins=(origin,))


def test_cors_origins_come_from_the_environment() -> None:
    env = config.CORS_ORIGINS_ENV
    assert config.cors_origins_from_env({}) == config.DEFAULT_CORS_ORIGINS
    assert config.cors_origins_from_env({env: "https://a.example, http://b:81"}) == (
        "https://a.example",
        "http://b:81",
    )
    assert config.cors_origins_from_env({env: ""}) == ()


def test_admin_is_loopback_only_even_when_the_listener_is_not() -> None:
    text = render(18080, 19901, listen_host="0.0.0.0")
    admin = text.split("static_resources:", 1)[0]
    assert 'socket_address: {address: "127.0.0.1", port_value: 19901}' in admin
    assert 'socket_address: {address: "0.0.0.0", port_value: 18080}' in text


def test_strict_transcoding_options() -> None:
    text = render(max_request_bytes=4096)
    for line in [
        "convert_grpc_status: true",
        "ignore_unknown_query_parameters: false",
        "reject_unknown_method: true",
        "reject_unknown_query_parameters: true",
        "preserve_proto_field_names: false",
        "always_print_primitive_fields: true",
        "match_incoming_request_route: false",
        "max_request_body_size: 4096",
    ]:
        assert line in text, line
    assert f'proto_descriptor: "{(ROOT / "gen" / "storefront.binpb").resolve()}"' in text


def test_upstreams_are_parameters() -> None:
    text = render(
        1111,
        2222,
        {"accounts": ("127.0.0.1", 3333), "orders": ("orders.storefront.svc", 4444)},
        "/x/y.binpb",
    )
    assert "port_value: 3333" in text and "port_value: 4444" in text
    assert "FulfillmentService" not in text  # only the given services are routed
    assert "type: STATIC" in text  # an IP address
    assert "type: STRICT_DNS" in text  # a host name
    assert 'proto_descriptor: "/x/y.binpb"' in text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"upstreams": {"payments": ("127.0.0.1", 1)}},
        {"upstreams": {}},
        {"upstreams": {"accounts": ("127.0.0.1", 70000)}},
        {"listen_port": 9000, "admin_port": 9000},
        {"listen_port": 0},
        {"max_request_bytes": 0},
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        render(**kwargs)


@needs_envoy
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {
            "listen_port": 18080,
            "admin_port": 19901,
            "upstreams": {"accounts": ("localhost", 60001), "fulfillment": ("127.0.0.1", 60003)},
            "access_log_path": "/tmp/storefront-envoy-access.log",
            "max_request_bytes": 65536,
            "route_timeout": 2.5,
            "health_check_interval": 0.5,
        },
    ],
)
def test_envoy_accepts_the_rendered_config(tmp_path: Path, kwargs: dict[str, object]) -> None:
    path = write_config(tmp_path / "envoy.yaml", **kwargs)
    validate(path)  # raises ConfigError with Envoy's complaint


@needs_envoy
def test_envoy_rejects_a_broken_config(tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(render().replace("codec_type: AUTO", "codec_type: SPDY"))
    with pytest.raises(ConfigError, match="envoy rejected"):
        validate(path)


def test_replicas_are_balanced_round_robin_with_health_checks_and_outlier_ejection() -> None:
    replicas = [("127.0.0.1", 50051), ("127.0.0.1", 50151), ("127.0.0.1", 50251)]
    text = render(upstreams={"accounts": replicas, "orders": [("127.0.0.1", 50052)]})
    clusters = {c["name"]: c for c in yaml.safe_load(text)["static_resources"]["clusters"]}
    accounts = clusters["accounts"]
    addresses = [
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for e in accounts["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert addresses == replicas
    assert accounts["lb_policy"] == "ROUND_ROBIN"
    assert accounts["health_checks"][0]["grpc_health_check"] == {"service_name": ""}
    # Two of three may be ejected at once, never the last one standing.
    assert accounts["outlier_detection"]["max_ejection_percent"] == 66
    assert clusters["orders"]["outlier_detection"]["max_ejection_percent"] == 0
    with pytest.raises(ConfigError):
        render(upstreams={"accounts": []})
    with pytest.raises(ConfigError):
        render(upstreams={"accounts": [("127.0.0.1", 1), ("localhost", 2)]})


@needs_envoy
def test_envoy_accepts_a_cluster_of_replicas(tmp_path: Path) -> None:
    replicas = [("127.0.0.1", 61001), ("127.0.0.1", 61101), ("127.0.0.1", 61201)]
    validate(write_config(tmp_path / "envoy.yaml", upstreams={"accounts": replicas}))


def test_cli_writes_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "envoy.yaml"
    argv = ["--out", str(out), "--accounts", "127.0.0.1:6001", "--orders", "localhost:6002"]
    argv += ["--jwt-issuer", AUTH.issuer, "--jwt-audience", "storefront"]
    argv += ["--jwks", str(AUTH.jwks_path)]
    assert config.main([*argv, "--listen-port", "6080", "--admin-port", "6901"]) == 0
    text = out.read_text()
    assert "port_value: 6001" in text and "port_value: 6002" in text
    assert "port_value: 50053" in text  # fulfillment keeps its default
    assert "port_value: 6080" in text and "port_value: 6901" in text
    assert "wrote" in capsys.readouterr().out


def test_envoy_argv_disables_hot_restart(tmp_path: Path) -> None:
    argv = config.envoy_argv(tmp_path / "e.yaml", concurrency=1)
    assert argv[1:3] == ["-c", str((tmp_path / "e.yaml").resolve())]
    assert "--disable-hot-restart" in argv
    assert argv[-2:] == ["--concurrency", "1"]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_descriptor_set_is_current() -> None:
    res = _run("tools/protogen.py", "--check")
    assert res.returncode == 0, res.stdout + res.stderr


def test_openapi_document_is_current() -> None:
    res = _run("tools/openapigen.py", "--check")
    assert res.returncode == 0, res.stdout + res.stderr


def test_openapi_uses_the_json_names_envoy_prints() -> None:
    doc = json.loads((ROOT / "docs" / "openapi" / "storefront.swagger.json").read_text())
    customer = doc["definitions"]["Customer"]["properties"]
    assert {"creditCards", "createTime", "updateTime"} <= set(customer)
    assert not any("_" in name for name in customer)
    assert "/v1/orders/{orderId}:approve" in doc["paths"]
    assert "/v1/fulfillments/{orderId}:markInTransit" in doc["paths"]
