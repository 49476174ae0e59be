"""The system grown on one machine, as `storefront run --replicas 3 --brokers 3` starts it:
three processes of every service behind Envoy, a KRaft cluster of three brokers. The demo
converges through it, `storefront status` shows every replica, and after SIGKILL of any one
of those processes (a service's replica, the broker leading the quorum, another broker)
the demo still goes through and `storefront check` (the CLI, as an operator runs it) finds
no divergence. The fault suite at scale (tests/faults/test_scale_chaos.py) is the same under
thousands of operations."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import topology
from stack import issuer
from stack.embedded import EmbeddedStack, Ports, free_ports
from storefront.accounts.v1 import accounts_pb2
from storefront_cli import system
from storefront_cli.clients import CLIENT_SERVICES, Clients
from storefront_cli.demo import PEOPLE, customer_draft, demo_round, run_demo
from svckit.authz import OPERATOR
from tests import leaks
from tests.support import System, tokens_of

pytestmark = pytest.mark.e2e
REPLICAS = 3
BROKERS = 3
PREFIX = "scale_"
SETUP_AND_DEMO_SECONDS = 450.0
"""Starting three brokers and twelve service processes, then the demo and `storefront check`
(about 225 s on the loaded 2-core machine, most of it the start), doubled: the first test's
budget, which pytest counts from the module's set-up."""
SECONDS_PER_VICTIM = 180.0
"""What one kill took here (a demo round, a REST call, `storefront check` until clean, the
restart: about 90 s on the loaded 2-core machine with the scale fault suite beside it),
doubled: the budget of the kill test below."""


@pytest.fixture(scope="module")
def grown() -> Iterator[System]:
    """Its own stack (it kills brokers), started as `storefront run` starts it."""
    st = EmbeddedStack(
        Path(tempfile.mkdtemp(prefix="storefront-scale-")),
        Ports.free(BROKERS),
        log=lambda _: None,
    )
    found: list[str] = []
    try:
        st.start()
        st.write_env_file()
        # Only now: ports picked before the stack bound its own could be the same ones (each
        # pick is "free right now"), and a service refuses to start on a port in use.
        ports = system.SystemPorts.free(REPLICAS)
        system.start_services(st, ports, db_prefix=PREFIX, log=lambda _: None)
        system.start_envoy(st, ports, concurrency=1)
        yield System(st, ports, PREFIX)
        for process in ports.processes():
            st.supervisor.stop(process)
        found = leaks.stack_leaks(st)
    finally:
        st.stop()
    assert not found, f"personal or card data in {st.run_dir}:\n" + "\n".join(found[:20])


def connect(s: System) -> Clients:
    """Clients balancing over every replica (round robin; a dead one is skipped)."""
    return Clients.connect(*(s.target(n) for n in CLIENT_SERVICES), tokens=tokens_of(s.stack))


async def cli(s: System, *args: str, timeout: float = 120.0) -> tuple[int, str]:
    """The `storefront` command as the operator runs it against this run dir: its stack.env
    and the ports `storefront run` recorded there (every replica)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "storefront_cli",
        *args,
        f"--run-dir={s.stack.run_dir}",
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "MONGODB_"))},
            "STOREFRONT_DB_PREFIX": s.db_prefix,
            "STOREFRONT_TOKEN": operator_token(s),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def operator_token(s: System) -> str:
    return issuer.for_run_dir(s.stack.run_dir).role(OPERATOR, ttl=3600, subject="scale-test")


async def check_clean(s: System, within: float = 90.0) -> None:
    """`storefront check` exits 0 (no divergence), allowing the copies time to converge."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        code, out = await cli(s, "check")
        if code == 0:
            return
        assert loop.time() < deadline, f"storefront check still finds divergence:\n{out}"
        await asyncio.sleep(2)


def rest_sign_up(s: System, n: int) -> int:
    """A customer signs up through Envoy's REST door (round robin over the replicas)."""
    from google.protobuf import json_format

    token = tokens_of(s.stack)(
        "/storefront.accounts.v1.AccountsService/CreateCustomer",
        accounts_pb2.CreateCustomerRequest(),
    )
    body = json_format.MessageToJson(customer_draft(PEOPLE[n % len(PEOPLE)]))
    request = urllib.request.Request(
        f"{s.envoy_url}/v1/customers",
        data=body.encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return int(reply.status)


@pytest.mark.timeout(SETUP_AND_DEMO_SECONDS)
async def test_the_demo_converges_and_status_shows_every_replica(grown: System) -> None:
    clients = connect(grown)
    try:
        await run_demo(clients, log=lambda _: None)
    finally:
        await clients.close()
    await check_clean(grown)
    [absent] = free_ports(1)  # no Prometheus here: optional
    code, out = await cli(grown, "status", "--json", f"--prometheus-port={absent}")
    assert code == 0, out
    rows = {h["part"]: h for h in json.loads(out.splitlines()[-1])["health"]}
    for service in topology.SYSTEM.names:
        for k in range(REPLICAS):
            row = rows[f"{service}_svc#{k + 1}"]
            assert row["ok"], row
    assert rows["kafka"]["detail"] == f"{BROKERS} brokers"
    assert rows["envoy"]["ok"]


VICTIMS = 4
"""One process of each kind: a service's first replica, a later one, the broker leading the
KRaft quorum and one that does not (the scale fault suite kills every service's)."""


def victims(s: System) -> list[str]:
    controller = s.stack.active_controller()
    assert controller is not None
    follower = next(b for b in s.stack.brokers if b != controller)
    return ["accounts", "orders-2", controller, follower]


@pytest.mark.timeout(VICTIMS * SECONDS_PER_VICTIM)
async def test_check_is_clean_after_killing_any_one_process(grown: System) -> None:
    sup = grown.stack.supervisor
    chosen = victims(grown)
    assert len(chosen) == VICTIMS
    for n, victim in enumerate(chosen, start=1):
        assert sup.kill(victim, signal.SIGKILL), f"{victim} was not running"
        try:
            # The rest goes on without it: every flow, through the surviving replicas (and
            # brokers), and a REST call through Envoy, which skips the dead replica.
            clients = connect(grown)
            try:
                await demo_round(clients, 100 + n, log=lambda _: None, timeout=90.0)
            finally:
                await clients.close()
            assert await asyncio.to_thread(rest_sign_up, grown, n) == 200
            await check_clean(grown)
        finally:
            await asyncio.to_thread(_restart, grown, victim)


def _restart(s: System, process: str) -> None:
    if process in s.stack.brokers:
        s.stack.supervisor.restart(process, timeout=120)
    else:
        s.stack.supervisor.restart(
            process, ready=system.health_serving(s.ports.grpc(process)), timeout=120
        )
