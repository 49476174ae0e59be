"""The whole system for end-to-end tests: the session's stack, the three services
as real processes (as `storefront run` starts them) and Envoy, on free ports."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stack.embedded import EmbeddedStack, Ports
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


@pytest.fixture(scope="module")
def isolated_system() -> Iterator[System]:
    """A system on a stack of its own, for tests that compare whole databases with
    whole topics (`storefront check`, replay): the shared stack's topics carry
    other suites' events, which a fresh consumer group rightly applies."""
    st = EmbeddedStack(Path(tempfile.mkdtemp(prefix="storefront-isolated-")), Ports.free(), log=lambda _: None)
    ports = system.SystemPorts.free()
    try:
        st.start()
        system.start_services(st, ports, db_prefix="iso_", log=lambda _: None)
        yield System(st, ports, "iso_")
    finally:
        st.stop()


@pytest.fixture
async def clients(running_system: System) -> AsyncIterator[Clients]:
    c = Clients.connect(*(running_system.target(s) for s in system.SERVICES))
    yield c
    await c.close()
