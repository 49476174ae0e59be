"""Issue 25 finding 2 against the whole stack: one customer trying to store fat orders and many
of them, natively and as JSON through Envoy, is refused with clear answers, pages stay
sendable, and another customer keeps being served."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import grpc
import pytest
from google.protobuf import json_format

import topology
from orders_svc import domain
from storefront.accounts.v1 import accounts_pb2
from storefront.catalog.v1 import catalog_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli.clients import Clients, eventually
from storefront_cli.demo import PEOPLE, customer_draft, order_draft
from tests.support import System, issuer_of, wait_for_copies
from tests.unit.test_order_quotas import FAT, fat_catalog, fat_draft

pytestmark = pytest.mark.e2e


def post_json(system: System, path: str, body: dict[str, object], token: str) -> int:
    request = urllib.request.Request(
        system.envoy_url + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


async def signed_up(clients: Clients) -> str:
    created = await clients.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[2]))
    )
    get = orders_pb2.GetCustomerOrdersRequest(customer_id=created.id)
    await eventually(lambda: clients.orders.GetCustomerOrders(get), what="copy in orders")
    return created.id


async def fat_product(system: System, clients: Clients) -> None:
    """The largest product the catalog takes, in the catalog and in orders' copy of it: the
    catalog prices lines, so a fat order is many lines of it."""
    [copy] = fat_catalog().values()
    product = catalog_pb2.Product(title=copy.title, description=copy.description)
    product.price.CopyFrom(copy.price)
    try:
        await clients.catalog.CreateProduct(
            catalog_pb2.CreateProductRequest(product=product, product_id=FAT)
        )
    except grpc.aio.AioRpcError as err:
        if err.code() != grpc.StatusCode.ALREADY_EXISTS:  # a rerun on the same system
            raise
    await asyncio.to_thread(wait_for_copies, system, {FAT})


def bulky_body() -> dict[str, object]:
    """The audit's ~1 MB order as a client sends it: titles and descriptions of 200 + 2,000
    four-byte characters on every line (orders would ignore them; Envoy never lets it in)."""
    draft = fat_draft()
    for item in draft.items:
        item.product.title = "\U0001f600" * 200
        item.product.description = "\U0001f600" * 2000
    return json_format.MessageToDict(draft)


async def test_one_customer_cannot_hoard_orders_and_others_are_served(
    running_system: System, clients: Clients
) -> None:
    attacker, other = await signed_up(clients), await signed_up(clients)
    token = issuer_of(running_system.stack).customer(attacker)
    await fat_product(running_system, clients)
    path = f"/v1/customers/{attacker}/orders"

    # A ~880 KB order once priced: refused natively and through Envoy as JSON, nothing stored.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await clients.orders.CreateOrder(
            orders_pb2.CreateOrderRequest(customer_id=attacker, order=fat_draft())
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # With the audit's titles on every line the JSON body passes Envoy's 1 MiB limit (413);
    # 30 lines of the product reach orders, which refuses the priced order for its size (400).
    assert post_json(running_system, path, bulky_body(), token) == 413
    third = json_format.MessageToDict(fat_draft(lines=30))
    assert post_json(running_system, path, third, token) == 400

    # Open orders up to the quota, then 429 / RESOURCE_EXHAUSTED.
    small = json_format.MessageToDict(order_draft((0, 1)))
    codes = [post_json(running_system, path, small, token) for _ in range(domain.MAX_OPEN_ORDERS)]
    assert codes == [200] * domain.MAX_OPEN_ORDERS
    assert post_json(running_system, path, small, token) == 429
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await clients.orders.CreateOrder(
            orders_pb2.CreateOrderRequest(customer_id=attacker, order=order_draft((0, 1)))
        )
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    # The attacker's orders come back in pages; the other customer is served.
    page = await clients.orders.GetCustomerOrders(
        orders_pb2.GetCustomerOrdersRequest(customer_id=attacker, page_size=15)
    )
    assert len(page.orders) == 15 and page.next_page_token
    rest = await clients.orders.GetCustomerOrders(
        orders_pb2.GetCustomerOrdersRequest(
            customer_id=attacker, page_size=15, page_token=page.next_page_token
        )
    )
    assert len(rest.orders) == domain.MAX_OPEN_ORDERS - 15 and not rest.next_page_token
    served = await clients.orders.CreateOrder(
        orders_pb2.CreateOrderRequest(customer_id=other, order=order_draft((1, 2)))
    )
    assert served.customer_id == other
    # Within the pod's memory limit (istio/storefront/orders.yaml: 512Mi), with room to spare.
    assert resident_mib(running_system.ports.metrics(topology.ORDERS)) < POD_LIMIT_MIB / 2


POD_LIMIT_MIB = 512


def resident_mib(metrics_port: int) -> float:
    """The process's RSS as its Prometheus endpoint reports it."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    [line] = [x for x in text.splitlines() if x.startswith("process_resident_memory_bytes ")]
    return float(line.split()[1]) / 2**20
