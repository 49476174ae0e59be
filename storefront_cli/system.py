"""The whole system on one machine: the embedded stack, every service of the topology and
Envoy, all under one Supervisor run dir. `storefront run` and the end-to-end
tests both start it from here, so they run the same thing."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import topology
from stack import cardkeys, issuer
from stack.embedded import EmbeddedStack, free_ports
from stack.issuer import LocalIssuer
from stack.procs import Supervisor
from svckit import names


@dataclass(frozen=True)
class SystemPorts:
    """Where each service (gRPC, its admin service and metrics) and Envoy listen: the
    topology's ports unless moved (tests take free ones)."""

    grpc_ports: Mapping[str, int] = field(
        default_factory=lambda: {s.name: s.grpc_port for s in topology.SYSTEM}
    )
    metrics_ports: Mapping[str, int] = field(
        default_factory=lambda: {s.name: s.metrics_port for s in topology.SYSTEM}
    )
    admin_ports: Mapping[str, int] = field(
        default_factory=lambda: {s.name: s.admin_port for s in topology.SYSTEM}
    )
    envoy: int = 8080
    envoy_admin: int = 9901

    @classmethod
    def declared(cls, system: topology.System) -> SystemPorts:
        """The ports `system` declares."""
        return cls(
            {s.name: s.grpc_port for s in system},
            {s.name: s.metrics_port for s in system},
            {s.name: s.admin_port for s in system},
        )

    @classmethod
    def free(cls) -> SystemPorts:
        services = topology.SYSTEM.names
        n = len(services)
        ports = free_ports(3 * n + 2)
        return cls(
            dict(zip(services, ports[:n], strict=True)),
            dict(zip(services, ports[n : 2 * n], strict=True)),
            dict(zip(services, ports[2 * n : 3 * n], strict=True)),
            *ports[3 * n :],
        )

    def grpc(self, service: str) -> int:
        return self.grpc_ports[service]

    def admin(self, service: str) -> int:
        """The service's internal admin service (loopback only)."""
        return self.admin_ports[service]

    def metrics(self, service: str) -> int:
        return self.metrics_ports[service]

    def moved(self, grpc: Mapping[str, int], admin: Mapping[str, int] | None = None) -> SystemPorts:
        """These ports with some services' gRPC and admin ports changed."""
        return replace(
            self,
            grpc_ports={**self.grpc_ports, **grpc},
            admin_ports={**self.admin_ports, **(admin or {})},
        )


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
    tools = {k: v for k, v in stack.env().items() if k != "MONGODB_PASSWORD_FILE"}
    return {
        **tools,
        **stack.kafka_as(service).env(),
        "MONGODB_URI": stack.mongodb_uri_as(service),  # its own role; in its environment only
        **local_issuer(stack).config().env(),
        **(cardkeys.env_for(stack.run_dir) if service == topology.ACCOUNTS else {}),
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(ports.grpc(service)),
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": str(ports.admin(service)),
        "METRICS_PORT": str(ports.metrics(service)),
        "MONGODB_DATABASE": f"{db_prefix}{topology.SYSTEM.service(service).database}",
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
    wait: bool = True,
) -> None:
    """Start the service as a supervised process; with `wait`, until it serves."""
    sup.start(
        service,
        [sys.executable, "-m", topology.SYSTEM.service(service).package],
        env={**service_env(stack, ports, service, db_prefix=db_prefix), **(extra_env or {})},
        ready=health_serving(ports.grpc(service)),
        timeout=timeout,
        wait=wait,
        cwd=Path(__file__).resolve().parent.parent,
    )


def start_services(
    stack: EmbeddedStack,
    ports: SystemPorts,
    *,
    db_prefix: str = "",
    log: Callable[[str], None] = print,
    timeout: float = 90.0,
) -> None:
    """Start every service not running yet, all at once (each needs only the stack, none
    another service), then wait until each serves."""
    sup = stack.supervisor
    started: list[str] = []
    for service in topology.SYSTEM.names:
        if sup.is_running(service):
            log(f"[run] {service}_svc already running")
            continue
        log(f"[run] starting {service}_svc on 127.0.0.1:{ports.grpc(service)} ...")
        start_service(sup, stack, ports, service, db_prefix=db_prefix, wait=False)
        started.append(service)
    for service in started:
        took = sup.wait_ready(service, health_serving(ports.grpc(service)), timeout)
        log(f"[run] {service}_svc serving after {took:.1f}s")


def grpc_target(ports: SystemPorts, service: str) -> str:
    return f"127.0.0.1:{ports.grpc(service)}"


def admin_target(ports: SystemPorts, service: str) -> str:
    return f"127.0.0.1:{ports.admin(service)}"


def start_envoy(
    stack: EmbeddedStack, ports: SystemPorts, *, concurrency: int = 2, name: str = "envoy"
) -> None:
    """Envoy in front of the public services: JSON/REST, gRPC-Web and native gRPC on one port
    (CORS for $STOREFRONT_CORS_ORIGINS, default http://localhost:3000). `name` is its process
    name in the run dir, and names its configuration and access log there."""
    from envoy_config.config import EdgeAuth, cors_origins_from_env, envoy_argv, write_config

    upstreams = {s.name: ("127.0.0.1", ports.grpc(s.name)) for s in topology.SYSTEM.public}
    config = write_config(
        stack.run_dir / f"{name}.yaml",
        listen_port=ports.envoy,
        admin_port=ports.envoy_admin,
        upstreams=upstreams,
        access_log_path=stack.run_dir / "logs" / f"{name}-access.log",
        auth=EdgeAuth.of(local_issuer(stack).config()),
        cors_origins=cors_origins_from_env(),
    )
    stack.supervisor.start(
        name,
        envoy_argv(config, log_level="warning", concurrency=concurrency),
        ready=ports.envoy,
        timeout=60.0,
    )
