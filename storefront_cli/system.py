"""The whole system on one machine: the embedded stack, every service of the topology and
Envoy, all under one Supervisor run dir. `storefront run` and the end-to-end
tests both start it from here, so they run the same thing."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import topology
from stack import cardkeys, issuer
from stack.embedded import EmbeddedStack, free_ports
from stack.issuer import LocalIssuer
from stack.procs import ProcessError, Supervisor, port_open
from svckit import names

REPLICA_PORT_STRIDE = 100
"""Replica k (counted from 0) of a service listens on the topology's ports plus k times this
(accounts: gRPC 50051, 50151, 50251 ...): every replica's ports are derived here, nowhere else."""

MAX_REPLICAS = 5
"""The declared ports leave room for this many replicas of each service (metrics 9464 + 4*100
stays clear of Envoy's admin 9901)."""


def replica_name(service: str, k: int) -> str:
    """The process name of replica `k` (from 0) of `service`: the first keeps the service's
    name (`accounts`), the others are numbered from 2 (`accounts-2`, `accounts-3`)."""
    return service if k == 0 else f"{service}-{k + 1}"


def service_of(process: str) -> str:
    """The service a replica's process name belongs to (`accounts-2` -> `accounts`)."""
    name, sep, number = process.rpartition("-")
    return name if sep and number.isdigit() and name in topology.SYSTEM.names else process


@dataclass(frozen=True)
class SystemPorts:
    """Where each service's replicas (gRPC, its admin service and metrics) and Envoy listen:
    the topology's ports (plus REPLICA_PORT_STRIDE per replica) unless moved (tests take free
    ones). The maps are keyed by process name (`replica_name`)."""

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
    replicas: int = 1
    """Processes per service."""

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {self.replicas}")

    @classmethod
    def declared(cls, system: topology.System, replicas: int = 1) -> SystemPorts:
        """The ports `system` declares, for `replicas` processes of each service."""
        if not 1 <= replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas must be 1 to {MAX_REPLICAS}, not {replicas}")

        def each(port: Callable[[topology.Service], int]) -> dict[str, int]:
            return {
                replica_name(s.name, k): port(s) + k * REPLICA_PORT_STRIDE
                for s in system
                for k in range(replicas)
            }

        return cls(
            each(lambda s: s.grpc_port),
            each(lambda s: s.metrics_port),
            each(lambda s: s.admin_port),
            replicas=replicas,
        )

    @classmethod
    def free(cls, replicas: int = 1) -> SystemPorts:
        """Ports free right now for `replicas` processes of each service, and Envoy."""
        processes = [replica_name(s, k) for s in topology.SYSTEM.names for k in range(replicas)]
        n = len(processes)
        ports = free_ports(3 * n + 2)
        return cls(
            dict(zip(processes, ports[:n], strict=True)),
            dict(zip(processes, ports[n : 2 * n], strict=True)),
            dict(zip(processes, ports[2 * n : 3 * n], strict=True)),
            envoy=ports[3 * n],
            envoy_admin=ports[3 * n + 1],
            replicas=replicas,
        )

    def instances(self, service: str) -> tuple[str, ...]:
        """The process names of `service`'s replicas, the first first."""
        return tuple(replica_name(service, k) for k in range(self.replicas))

    def processes(self, system: topology.System = topology.SYSTEM) -> tuple[str, ...]:
        """Every replica of every service of `system`, service by service."""
        return tuple(p for s in system.names for p in self.instances(s))

    def grpc(self, process: str) -> int:
        """The gRPC port of a service's first replica, or of the replica named."""
        return self.grpc_ports[process]

    def admin(self, process: str) -> int:
        """The internal admin service's port (loopback only)."""
        return self.admin_ports[process]

    def metrics(self, process: str) -> int:
        return self.metrics_ports[process]

    def moved(self, grpc: Mapping[str, int], admin: Mapping[str, int] | None = None) -> SystemPorts:
        """These ports with some processes' gRPC and admin ports changed."""
        return replace(
            self,
            grpc_ports={**self.grpc_ports, **grpc},
            admin_ports={**self.admin_ports, **(admin or {})},
        )

    def data(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def of_data(cls, data: Mapping[str, Any]) -> SystemPorts:
        return cls(**data)


PORTS_FILE = "system.json"
"""Where `storefront run` records the ports of what it started (the replicas too), so the
operator commands and the console find every replica."""


def save_ports(run_dir: Path, ports: SystemPorts) -> None:
    path = Path(run_dir) / PORTS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(ports.data(), indent=2))
    tmp.replace(path)


def saved_ports(run_dir: Path) -> SystemPorts | None:
    """The ports the last `storefront run` in `run_dir` started, if it recorded them."""
    try:
        return SystemPorts.of_data(json.loads((Path(run_dir) / PORTS_FILE).read_text()))
    except (FileNotFoundError, TypeError, ValueError):
        return None


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
    stack: EmbeddedStack, ports: SystemPorts, process: str, *, db_prefix: str = ""
) -> dict[str, str]:
    """The environment of one replica (`process`, as `replica_name` names it): every replica
    of a service shares its identity, database and consumer group; only the ports differ."""
    service = service_of(process)
    tools = {k: v for k, v in stack.env().items() if k != "MONGODB_PASSWORD_FILE"}
    return {
        **tools,
        **stack.kafka_as(service).env(),
        "MONGODB_URI": stack.mongodb_uri_as(service),  # its own role; in its environment only
        **local_issuer(stack).config().env(),
        **(cardkeys.env_for(stack.run_dir) if service == topology.ACCOUNTS else {}),
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(ports.grpc(process)),
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": str(ports.admin(process)),
        "METRICS_PORT": str(ports.metrics(process)),
        "MONGODB_DATABASE": f"{db_prefix}{topology.SYSTEM.service(service).database}",
        "KAFKA_CONSUMER_GROUP": names.consumer_group(service, db_prefix),
    }


def start_service(
    sup: Supervisor,
    stack: EmbeddedStack,
    ports: SystemPorts,
    process: str,
    *,
    db_prefix: str = "",
    timeout: float = 90.0,
    extra_env: Mapping[str, str] | None = None,
    wait: bool = True,
) -> None:
    """Start one replica of a service (`process`: `accounts`, `accounts-2` ...) as a supervised
    process; with `wait`, until it serves."""
    taken = [
        p
        for p in (ports.grpc(process), ports.admin(process), ports.metrics(process))
        if port_open(p)
    ]
    if taken:
        # Its readiness is a health check on its port: another server there would pass it.
        raise ProcessError(f"cannot start {process}: port(s) {taken} already in use")
    sup.start(
        process,
        [sys.executable, "-m", topology.SYSTEM.service(service_of(process)).package],
        env={**service_env(stack, ports, process, db_prefix=db_prefix), **(extra_env or {})},
        ready=health_serving(ports.grpc(process)),
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
    """Start every replica of every service not running yet, all at once (each needs only the
    stack, none another service, and each waits for MongoDB and Kafka on its own), then wait
    until each serves."""
    sup = stack.supervisor
    save_ports(stack.run_dir, ports)
    started: list[str] = []
    for service in topology.SYSTEM.names:
        for process in ports.instances(service):
            if sup.is_running(process):
                log(f"[run] {process} already running")
                continue
            log(f"[run] starting {process} on 127.0.0.1:{ports.grpc(process)} ...")
            start_service(sup, stack, ports, process, db_prefix=db_prefix, wait=False)
            started.append(process)
    for process in started:
        took = sup.wait_ready(process, health_serving(ports.grpc(process)), timeout)
        log(f"[run] {process} serving after {took:.1f}s")


def grpc_target(ports: SystemPorts, service: str) -> str:
    """A gRPC target reaching every replica of `service` (a client balances across them with
    the round_robin policy, storefront_cli.clients.channel)."""
    return _target([ports.grpc(p) for p in ports.instances(service_of(service))])


def admin_target(ports: SystemPorts, service: str) -> str:
    return _target([ports.admin(p) for p in ports.instances(service_of(service))])


def _target(port_list: list[int]) -> str:
    if len(port_list) == 1:
        return f"127.0.0.1:{port_list[0]}"
    return "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in port_list)


def start_envoy(
    stack: EmbeddedStack, ports: SystemPorts, *, concurrency: int = 2, name: str = "envoy"
) -> None:
    """Envoy in front of the public services: JSON/REST, gRPC-Web and native gRPC on one port
    (CORS for $STOREFRONT_CORS_ORIGINS, default http://localhost:3000). `name` is its process
    name in the run dir, and names its configuration and access log there."""
    from envoy_config.config import EdgeAuth, cors_origins_from_env, envoy_argv, write_config

    upstreams = {
        s.name: [("127.0.0.1", ports.grpc(p)) for p in ports.instances(s.name)]
        for s in topology.SYSTEM.public
    }
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
