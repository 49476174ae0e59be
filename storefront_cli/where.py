"""Where the running system is, for the operator commands and the console: the endpoints
(storefront_cli.endpoints) and the services' ports, and the flags that point elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import topology
from storefront_cli import endpoints, system
from svckit import names


@dataclass(frozen=True)
class Where:
    """Where the running system listens."""

    ep: endpoints.Endpoints
    ports: system.SystemPorts
    host: str = "127.0.0.1"
    prometheus_port: int = 9090
    system: topology.System = topology.SYSTEM
    """What runs there (a test adds its own consumers)."""

    def group(self, service: str) -> str:
        return names.consumer_group(service, self.ep.db_prefix)  # as system starts them


def where_of(args: argparse.Namespace) -> Where:
    """The Where of `where_flags`' arguments."""
    ep = endpoints.load(Path(args.run_dir), db_prefix=args.db_prefix)
    ep = dataclasses.replace(
        ep, kafka=ep.kafka.with_bootstrap(args.kafka), mongodb=args.mongodb or ep.mongodb
    )

    def given(flag: str) -> dict[str, int]:
        """Each service whose ``--<service><flag>`` was given, with its value."""
        return {
            s: port
            for s in topology.SYSTEM.names
            if (port := getattr(args, f"{s.replace('-', '_')}{flag}")) is not None
        }

    # Every replica `storefront run` started there, else the topology's ports.
    started = system.saved_ports(Path(args.run_dir)) or system.SystemPorts()
    ports = started.moved(given("_port"), given("_admin_port"))
    if args.envoy_admin_port is not None:
        ports = dataclasses.replace(ports, envoy_admin=args.envoy_admin_port)
    return Where(ep, ports, args.host, args.prometheus_port)


def location_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", default=str(endpoints.RUN_DIR), help="where stack.env is")
    p.add_argument("--kafka", help="bootstrap servers (default: stack.env, then 127.0.0.1:9092)")
    p.add_argument("--mongodb", help="MongoDB URI (default: stack.env, then 127.0.0.1:27017)")
    p.add_argument("--db-prefix", default=None, help="database/group name prefix (tests)")


def quiet_clients() -> None:
    """aiokafka logs every refused connection; the tables already say what is down."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def where_flags(p: argparse.ArgumentParser) -> None:
    """Where the system is, for `status` (and the console): `where_of` reads them."""
    location_flags(p)
    defaults = system.SystemPorts()
    p.add_argument("--host", default="127.0.0.1", help="where the services and Envoy listen")
    for service in topology.SYSTEM.names:
        p.add_argument(
            f"--{service}-port",
            type=int,
            help=f"{service}_svc gRPC port (default {defaults.grpc(service)})",
        )
        p.add_argument(
            f"--{service}-admin-port",
            type=int,
            help=f"{service}_svc admin service port (default {defaults.admin(service)})",
        )
    p.add_argument("--envoy-admin-port", type=int, help=f"default {defaults.envoy_admin}")
    p.add_argument("--prometheus-port", type=int, default=9090)
