"""The services' images, built from the root Dockerfile and run: every service of the topology
as a container (podman, host network) against the embedded stack, Envoy in front, and the
demo's flows through Envoy as an authenticated client (the catalog, customers and their copy
in orders, orders priced from the catalog through fulfilment and back, a price change). Then
each container stops on SIGTERM: the service, PID 1 in it, drains and exits by itself.

The install step provides podman, runc and the base image (stack/images.py); the build reuses
podman's layer cache, so only changed code is rebuilt. Phases and times: the test summary.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import topology
from stack import images
from stack.embedded import EmbeddedStack
from storefront_cli import system
from storefront_cli.clients import CLIENT_SERVICES, Clients
from storefront_cli.demo import run_demo
from tests.images.conftest import Phase
from tests.support import System, ensure_tools, tokens_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


ENVOY = "envoy-images"
"""This suite's Envoy, beside the session's (`running_system`) on the shared stack."""


def container(prefix: str, service: str) -> str:
    return f"storefront-{prefix}{service}"


@pytest.fixture(scope="module")
def built() -> list[str]:
    """Each service's image, built from the current tree."""
    with Phase("install check (podman, runc, base image)"):
        ensure_tools("containers")
    for service in topology.SYSTEM.names:
        with Phase(f"build {images.image(service)}"):
            images.build(service, log=lambda _: None)
    return [images.image(s) for s in topology.SYSTEM.names]


def run_container(
    stack: EmbeddedStack, ports: system.SystemPorts, prefix: str, service: str
) -> None:
    """The service's container as a supervised process, configured as `storefront run`
    configures the process: its environment passed by name, the run dir's keys and
    credentials mounted at their paths."""
    env = system.service_env(stack, ports, service, db_prefix=prefix)
    env.pop("STOREFRONT_TOOLS_DIR", None)  # the host's tools: nothing in the image reads them
    outside = [
        k for k, v in env.items() if v.startswith("/") and not Path(v).is_relative_to(stack.run_dir)
    ]
    assert not outside, f"paths the container would not see: {outside}"
    argv = images.run_argv(
        container(prefix, service),
        service,
        sorted(env),
        mounts=[stack.run_dir],
        # The run dir's secrets are private files of this user; in Kubernetes a secret volume
        # is made readable to the image's user instead.
        user=f"{os.getuid()}:{os.getgid()}",
    )
    stack.supervisor.start(
        container(prefix, service),
        argv,
        env=images.podman_env(env),
        ready=system.health_serving(ports.grpc(service)),
        timeout=180.0,
    )


@pytest.fixture(scope="module")
def containers(stack: EmbeddedStack, built: list[str]) -> Iterator[System]:
    ports = system.SystemPorts.free()
    prefix = f"img{uuid.uuid4().hex[:8]}_"
    try:
        for service in topology.SYSTEM.names:
            with Phase(f"start {service} container until it serves"):
                run_container(stack, ports, prefix, service)
        with Phase("start envoy"):
            system.start_envoy(stack, ports, concurrency=1, name=ENVOY)
        yield System(stack, ports, prefix)
    finally:
        stack.supervisor.stop(ENVOY)
        for service in topology.SYSTEM.names:
            name = container(prefix, service)
            images.podman("rm", "--force", "--ignore", f"--time={images.STOP_GRACE_SECONDS}", name)
            stack.supervisor.stop(name)


@pytest.fixture
async def through_envoy(containers: System) -> AsyncIterator[Clients]:
    """The four APIs through Envoy's gRPC port, each call with a bearer token Envoy checks."""
    edge = f"127.0.0.1:{containers.ports.envoy}"
    c = Clients.connect(*(edge for _ in CLIENT_SERVICES), tokens=tokens_of(containers.stack))
    yield c
    await c.close()


def inspect(name: str, field: str) -> str:
    return images.podman("inspect", "--format", f"{{{{{field}}}}}", name).strip()


async def test_every_service_runs_in_its_container_and_is_healthy(containers: System) -> None:
    for service in topology.SYSTEM.names:
        name = container(containers.db_prefix, service)
        assert inspect(name, ".State.Status") == "running", name
        assert inspect(name, ".ImageName") == images.image(service)
        # The image's own HEALTHCHECK command, run inside the container (without its 3 s
        # timeout, which a loaded test machine's Python start-up alone may exceed).
        check = json.loads(
            images.podman("inspect", "--format", "{{json .Config.Healthcheck.Test}}", name)
        )
        assert check[0] == "CMD", check
        images.podman("exec", name, *check[1:])


async def test_demo_flows_through_envoy_to_the_containers(through_envoy: Clients) -> None:
    lines: list[str] = []
    with Phase("demo flows through envoy"):
        await run_demo(through_envoy, lines.append, timeout=90)
    assert any(line.startswith("[demo] converged in") for line in lines), lines


def test_containers_stop_on_sigterm(containers: System) -> None:
    """`podman stop` sends the image's stop signal and kills only after the grace: exit
    status 0 means the service handled SIGTERM as PID 1 and drained (137 would be the kill)."""
    for service in reversed(topology.SYSTEM.names):
        name = container(containers.db_prefix, service)
        t0 = time.monotonic()
        with Phase(f"podman stop {service} (grace {images.STOP_GRACE_SECONDS}s)"):
            images.podman("stop", f"--time={images.STOP_GRACE_SECONDS}", name)
        took = time.monotonic() - t0
        assert inspect(name, ".State.ExitCode") == "0", (service, f"{took:.1f}s")
