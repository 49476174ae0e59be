"""`storefront console`: the operator console in the browser (docs/observability.md).

`storefront run` starts it under the run's Supervisor (`start_console`); on its own it
points at any system, e.g. the mesh's through port-forwards and its Prometheus:

    uv run storefront console --prometheus http://127.0.0.1:9090 --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import urllib.parse
from pathlib import Path

import topology
from stack import issuer
from stack.embedded import EmbeddedStack
from storefront_cli import system
from storefront_cli import where as location
from svckit.auth import AuthConfig
from svckit.authz import OPERATOR

DEFAULT_PORT = 8090
CONSOLE = "console"
"""Supervisor name of the console process under `storefront run`."""
LINK_TTL = 15 * 60
"""Lifetime of the operator token in the link `storefront token --console` prints: short,
since the link is a credential that ends up in terminals and scrollback (ask again for
another)."""


def url(port: int = DEFAULT_PORT) -> str:
    return f"http://127.0.0.1:{port}"


def operator_link(run_dir: Path, port: int = DEFAULT_PORT, ttl: int = LINK_TTL) -> str:
    """The console's URL with an operator token of the run dir's issuer in its fragment (the
    page keeps it for the tab and drops it from the address bar; a fragment is never sent
    to a server)."""
    token = issuer.for_run_dir(run_dir).role(OPERATOR, ttl=ttl, subject="console")
    return f"{url(port)}/#token={token}"


def start_console(
    stack: EmbeddedStack,
    ports: system.SystemPorts,
    *,
    port: int = DEFAULT_PORT,
    prometheus: str,
    db_prefix: str = "",
    name: str = CONSOLE,
    timeout: float = 30.0,
    wait: bool = True,
) -> str:
    """Start `storefront console` for this stack under its Supervisor; its URL. Without
    `wait` it returns once started (``Supervisor.wait_ready`` on `port` waits for it)."""
    argv = [
        sys.executable,
        "-m",
        "storefront_cli",
        "console",
        f"--run-dir={stack.run_dir}",
        f"--kafka={stack.kafka_bootstrap}",
        f"--db-prefix={db_prefix}",
        *(f"--{s}-port={ports.grpc(s)}" for s in topology.SYSTEM.names),
        *(f"--{s}-admin-port={ports.admin(s)}" for s in topology.SYSTEM.names),
        f"--envoy-admin-port={ports.envoy_admin}",
        f"--prometheus={prometheus}",
        f"--port={port}",
    ]
    # The issuer the services trust, and Kafka and MongoDB as the operator, who reads only:
    # through the environment and files, so no password is on its command line.
    env = {**system.local_issuer(stack).config().env(), **stack.env()}
    stack.supervisor.start(
        name,
        argv,
        env=env,
        ready=port,
        timeout=timeout,
        wait=wait,
        cwd=Path(__file__).parents[2],
    )
    return url(port)


def _auth(run_dir: Path) -> AuthConfig:
    """The services' issuer: AUTH_* from the environment (as a service reads them), else the
    run dir's local issuer."""
    if os.environ.get("AUTH_ISSUER"):
        return AuthConfig.from_env()
    return issuer.for_run_dir(run_dir).config()


def _cmd_console(args: argparse.Namespace) -> int:
    from storefront_cli.console.server import ConsoleConfig, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    where = location.where_of(args)
    prometheus = (args.prometheus or f"http://127.0.0.1:{where.prometheus_port}").rstrip("/")
    given = urllib.parse.urlsplit(prometheus)
    if given.hostname in ("127.0.0.1", "localhost") and given.port:
        where = dataclasses.replace(where, prometheus_port=given.port)  # its health row
    config = ConsoleConfig(
        where=where,
        prometheus=prometheus,
        auth=_auth(Path(args.run_dir)),
        port=args.port,
        namespace=args.namespace,
        window=args.window,
    )
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        pass
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("console", help="serve the operator console on 127.0.0.1")
    location.where_flags(p)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument(
        "--prometheus",
        metavar="URL",
        help="Prometheus to query for the graph (default http://127.0.0.1:<--prometheus-port>)",
    )
    p.add_argument("--namespace", default="storefront", help="the series' namespace label")
    p.add_argument("--window", default="1m", help="rate window of the graph (PromQL duration)")
    p.set_defaults(func=_cmd_console)
