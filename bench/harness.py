"""The system under test: its own embedded stack, the services and Envoy on free ports.

Everything runs under one Supervisor run dir (bench/.run-<pid> unless --run-dir), so a bench
never touches a stack started by `make up` or the tests, and stops all it started.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stack.embedded import EmbeddedStack, Ports, free_ports
from stack.procs import port_open
from storefront_cli import system

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "bench_"
BARE = "bare-grpc"
"""The bare gRPC server's process name (bench.bare_server: the gRPC ceiling)."""
BARE_FIND = "bare-grpc-find"
"""... and the one that awaits a find_one per GetCustomer."""

Log = Callable[[str], None]


@dataclass
class Harness:
    run_dir: Path
    log: Log
    stack: EmbeddedStack | None = None
    ports: system.SystemPorts | None = None
    replicas: int = 1
    """Processes of every service (bench/scale.py runs 1 and 3)."""
    brokers: int = 1

    def start_stack(self) -> None:
        self.stack = EmbeddedStack(self.run_dir, Ports.free(self.brokers), log=self.log)
        took = self.stack.start()
        self.log(f"[bench] stack up in {sum(took.values()):.0f}s ({self.stack.run_dir})")
        self.ports = system.SystemPorts.free(self.replicas)

    @property
    def sup(self):
        assert self.stack is not None
        return self.stack.supervisor

    def service_env(self, service: str) -> dict[str, str]:
        assert self.stack and self.ports
        return {
            **system.service_env(self.stack, self.ports, service, db_prefix=PREFIX),
            "LOG_LEVEL": "WARNING",
        }

    def start_service(
        self, service: str, extra_env: dict[str, str] | None = None, *, wait: bool = True
    ) -> None:
        assert self.stack and self.ports
        self.sup.start(
            service,
            [sys.executable, "-m", f"{system.service_of(service)}_svc"],
            env={**self.service_env(service), **(extra_env or {})},
            ready=system.health_serving(self.ports.grpc(service)),
            timeout=90.0,
            cwd=ROOT,
            wait=wait,
        )

    def wait_service(self, service: str) -> None:
        assert self.ports
        self.sup.wait_ready(service, system.health_serving(self.ports.grpc(service)), 90.0)

    def stop_service(self, service: str) -> None:
        self.sup.stop(service)

    def start_envoy(self) -> None:
        assert self.stack and self.ports
        system.start_envoy(self.stack, self.ports, concurrency=1)

    def start_bare(self, find: str = "") -> int:
        """The bare gRPC server (bench.bare_server); with `find` (DB.COLLECTION), the one that
        also awaits a find_one per GetCustomer, as BARE_FIND."""
        assert self.stack
        port = free_ports(1)[0]
        argv = [sys.executable, "-m", "bench.bare_server", "--port", str(port)]
        self.sup.start(
            BARE_FIND if find else BARE,
            [*argv, "--find", find] if find else argv,
            env={"MONGODB_URI": self.stack.mongodb_uri} if find else None,
            ready=port,
            timeout=30.0,
            cwd=ROOT,
        )
        return port

    def pid(self, name: str) -> int | None:
        return self.sup.pid(name)

    def target(self, service: str) -> str:
        assert self.ports
        return system.grpc_target(self.ports, service)

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} not open")
        time.sleep(0.1)


def default_run_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="storefront-bench-"))
