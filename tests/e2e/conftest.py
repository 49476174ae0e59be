"""The whole system for end-to-end tests: the session's stack, the three services
as real processes (as `storefront run` starts them) and Envoy, on free ports."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from stack.embedded import EmbeddedStack
from storefront_cli import system
from storefront_cli.clients import Clients


@dataclass
class System:
    stack: EmbeddedStack
    ports: system.SystemPorts
    db_prefix: str

    def target(self, service: str) -> str:
        return system.grpc_target(self.ports, service)

    @property
    def envoy_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.envoy}"

    def database(self, service: str) -> str:
        return f"{self.db_prefix}{service}"


@pytest.fixture(scope="session")
def running_system(stack: EmbeddedStack) -> Iterator[System]:
    ports = system.SystemPorts.free()
    prefix = f"e2e{uuid.uuid4().hex[:8]}_"
    system.start_services(stack, ports, db_prefix=prefix, log=lambda _: None)
    system.start_envoy(stack, ports, concurrency=1)
    yield System(stack, ports, prefix)
    for name in ("envoy", *system.SERVICES):
        stack.supervisor.stop(name)


@pytest.fixture
async def clients(running_system: System) -> AsyncIterator[Clients]:
    c = Clients.connect(*(running_system.target(s) for s in system.SERVICES))
    yield c
    await c.close()
