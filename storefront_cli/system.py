"""The whole system on one machine: the embedded stack, the four services and
Envoy, all under one Supervisor run dir. `storefront run` and the end-to-end
tests both start it from here, so they run the same thing."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stack import cardkeys, issuer
from stack.embedded import EmbeddedStack, free_ports
from stack.issuer import LocalIssuer
from stack.procs import Supervisor
from svckit import names


@dataclass(frozen=True)
class SystemPorts:
    accounts: int = names.GRPC_PORTS[names.ACCOUNTS]
    orders: int = names.GRPC_PORTS[names.ORDERS]
    fulfillment: int = names.GRPC_PORTS[names.FULFILLMENT]
    catalog: int = names.GRPC_PORTS[names.CATALOG]
    accounts_metrics: int = names.METRICS_PORTS[names.ACCOUNTS]
    orders_metrics: int = names.METRICS_PORTS[names.ORDERS]
    fulfillment_metrics: int = names.METRICS_PORTS[names.FULFILLMENT]
    catalog_metrics: int = names.METRICS_PORTS[names.CATALOG]
    envoy: int = 8080
    envoy_admin: int = 9901

    @classmethod
    def free(cls) -> SystemPorts:
        return cls(*free_ports(10))

    def grpc(self, service: str) -> int:
        return int(asdict(self)[service])

    def metrics(self, service: str) -> int:
        return int(asdict(self)[f"{service}_metrics"])


def health_serving(port: int, service: str = "") -> Callable[[], bool]:
    """Ready when grpc.health.v1 says SERVING, i.e. MongoDB and Kafka are reachable."""

    def check() -> bool:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                return reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    return check


def local_issuer(stack: EmbeddedStack) -> LocalIssuer:
    """The run dir's token issuer, which Envoy and the services trust."""
    return issuer.for_run_dir(stack.run_dir)


def service_env(
    stack: EmbeddedStack, ports: SystemPorts, service: str, *, db_prefix: str = ""
) -> dict[str, str]:
    return {
        **stack.env(),
        **stack.kafka_as(service).env(),
        **local_issuer(stack).config().env(),
        **(cardkeys.env_for(stack.run_dir) if service == "accounts" else {}),
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(ports.grpc(service)),
        "METRICS_PORT": str(ports.metrics(service)),
        "MONGODB_DATABASE": f"{db_prefix}{service}",
        "KAFKA_CONSUMER_GROUP": names.consumer_group(service, db_prefix),
    }


def start_service(
    sup: Supervisor,
    stack: EmbeddedStack,
    ports: SystemPorts,
    service: str,
    *,
    db_prefix: str = "",
    timeout: float = 90.0,
    extra_env: Mapping[str, str] | None = None,
) -> None:
    sup.start(
        service,
        [sys.executable, "-m", f"{service}_svc"],
        env={**service_env(stack, ports, service, db_prefix=db_prefix), **(extra_env or {})},
        ready=health_serving(ports.grpc(service)),
        timeout=timeout,
        cwd=Path(__file__).resolve().parent.parent,
    )


def start_services(
    stack: EmbeddedStack,
    ports: SystemPorts,
    *,
    db_prefix: str = "",
    log: Callable[[str], None] = print,
) -> None:
    sup = stack.supervisor
    for service in names.SERVICES:
        if sup.is_running(service):
            log(f"[run] {service}_svc already running")
            continue
        log(f"[run] starting {service}_svc on 127.0.0.1:{ports.grpc(service)} ...")
        start_service(sup, stack, ports, service, db_prefix=db_prefix)


def grpc_target(ports: SystemPorts, service: str) -> str:
    return f"127.0.0.1:{ports.grpc(service)}"


def start_envoy(stack: EmbeddedStack, ports: SystemPorts, *, concurrency: int = 2) -> None:
    """Envoy in front of the four services: JSON/REST, gRPC-Web and native gRPC on one port
    (CORS for $STOREFRONT_CORS_ORIGINS, default http://localhost:3000)."""
    from envoy_config.config import EdgeAuth, cors_origins_from_env, envoy_argv, write_config

    upstreams = {s: ("127.0.0.1", ports.grpc(s)) for s in names.SERVICES}
    config = write_config(
        stack.run_dir / "envoy.yaml",
        listen_port=ports.envoy,
        admin_port=ports.envoy_admin,
        upstreams=upstreams,
        access_log_path=stack.run_dir / "logs" / "envoy-access.log",
        auth=EdgeAuth.of(local_issuer(stack).config()),
        cors_origins=cors_origins_from_env(),
    )
    stack.supervisor.start(
        "envoy",
        envoy_argv(config, log_level="warning", concurrency=concurrency),
        ready=ports.envoy,
        timeout=60.0,
    )
