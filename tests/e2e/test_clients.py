"""The example clients beyond Python, run against the running system as docs/api.md shows them:
the Go program over native gRPC to the services' ports, the TypeScript one (Connect-ES, gRPC-Web
transport) through Envoy. Each signs a customer up with its own token, places an order and
prints the order it read back; the test checks that order against what the services hold.

Their toolchains install themselves (`stack.tools` component ``clients``: npm packages, Go
modules), so a missing toolchain is installed here rather than skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from google.protobuf import json_format

from stack import tools
from storefront.accounts.v1 import accounts_pb2
from storefront.catalog.v1 import catalog_pb2
from storefront.common.v1 import common_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli.clients import Clients, eventually
from tests.e2e.conftest import System
from tests.support import ensure_tools, issuer_of

pytestmark = pytest.mark.e2e

ROOT = tools.REPO_ROOT
GO_CLIENT = ROOT / "examples" / "go"
TS_CLIENT = ROOT / "examples" / "ts" / "main.ts"


@pytest.fixture(scope="module", autouse=True)
def toolchains() -> None:
    ensure_tools("clients")


def run(argv: list[str | Path], *, cwd: Path, env: dict[str, str]) -> str:
    """The client's stdout; its stderr in the failure message if it exits non-zero."""
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"{argv[0]} failed ({done.returncode}):\n{done.stderr}"
    return done.stdout


async def check_order(clients: Clients, printed: str, customer_id: str) -> orders_pb2.Order:
    """The printed order is the one orders holds, placed for the token's customer."""
    order = json_format.Parse(printed, orders_pb2.Order())
    assert order.customer_id == customer_id
    assert order.status == common_pb2.ORDER_STATUS_CREATED
    assert len(order.items) == 1 and order.items[0].product.id
    held = await clients.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order.order_id))
    assert held == order
    customer = await clients.accounts.GetCustomer(
        accounts_pb2.GetCustomerRequest(customer_id=customer_id)
    )
    assert customer.name.first_name and customer.version == 1
    return order


async def priced_by_the_catalog(clients: Clients, order: orders_pb2.Order) -> None:
    """The example named the product only: the line carries the catalog's title, and a price
    (orders' copy may trail a price change, so it is not compared with today's)."""
    line = order.items[0].product
    product = await clients.catalog.GetProduct(catalog_pb2.GetProductRequest(product_id=line.id))
    assert line.title == product.title and line.price.currency_code == "USD"
    assert line.price.units > 0


async def test_go_client_over_native_grpc(running_system: System, clients: Clients) -> None:
    customer_id = f"go-{uuid.uuid4().hex[:12]}"
    argv: list[str | Path] = ["go", "run", "."]
    argv += ["-accounts", running_system.target("accounts")]
    argv += ["-orders", running_system.target("orders")]
    argv += ["-catalog", running_system.target("catalog")]
    token = issuer_of(running_system.stack).customer(customer_id)
    printed = await asyncio.to_thread(run, argv, cwd=GO_CLIENT, env={"TOKEN": token})
    order = await check_order(clients, printed, customer_id)
    assert order.items[0].quantity == 2
    await priced_by_the_catalog(clients, order)


async def test_typescript_client_over_grpc_web_through_envoy(
    running_system: System, clients: Clients
) -> None:
    customer_id = f"ts-{uuid.uuid4().hex[:12]}"
    token = issuer_of(running_system.stack).customer(customer_id)
    env = {"TOKEN": token, "STOREFRONT_URL": running_system.envoy_url}
    printed = await asyncio.to_thread(run, [tools.path("tsx"), TS_CLIENT], cwd=ROOT, env=env)
    order = await check_order(clients, printed, customer_id)
    await priced_by_the_catalog(clients, order)

    # Through Envoy, and as gRPC-Web.
    async def logged() -> dict[str, str] | None:  # Envoy writes its access log every second
        log = running_system.stack.run_dir / "logs" / "envoy-access.log"
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        found = [
            line
            for line in lines
            # Sent as the gRPC path (REST's is /v1/orders/...) over HTTP/1.1 (native gRPC's is 2).
            if line["path"] == line["grpc_method"] == "/storefront.orders.v1.OrdersService/GetOrder"
            and line["protocol"] == "HTTP/1.1"
            and str(line["status"]) == "200"
        ]
        return found[-1] if found else None

    assert await eventually(logged, timeout=10, what="the gRPC-Web call in Envoy's log")


def test_the_go_client_vets_against_the_generated_code() -> None:
    run(["go", "vet", "."], cwd=GO_CLIENT, env={})


def test_the_typescript_client_type_checks_against_the_generated_code() -> None:
    run([tools.path("tsc"), "-p", "examples/ts"], cwd=ROOT, env={})


def test_a_client_without_a_token_says_how_to_get_one() -> None:
    done = subprocess.run(
        [str(tools.path("tsx")), str(TS_CLIENT)],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "TOKEN"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "storefront token --customer" in done.stderr


async def test_envoy_refuses_the_typescript_client_a_bad_token(running_system: System) -> None:
    """jwt_authn applies to gRPC-Web as to REST: Connect reads Envoy's 401 as UNAUTHENTICATED."""
    env = {**os.environ, "TOKEN": "not-a-jwt", "STOREFRONT_URL": running_system.envoy_url}
    done = await asyncio.to_thread(
        subprocess.run,
        [str(tools.path("tsx")), str(TS_CLIENT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "[unauthenticated]" in done.stderr, done.stderr[-2000:]
