"""The three event flows end to end over gRPC, against the services as processes."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from storefront.accounts.v1 import accounts_pb2
from storefront.common.v1 import common_pb2
from storefront.fulfillment.v1 import fulfillment_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli.clients import Clients, eventually
from storefront_cli.demo import PEOPLE, customer_draft, order_draft, run_demo

pytestmark = pytest.mark.e2e
Status = common_pb2.OrderStatus
FULL_LIFECYCLE = [
    Status.ORDER_STATUS_CREATED,
    Status.ORDER_STATUS_APPROVED,
    Status.ORDER_STATUS_PROCESSING,
    Status.ORDER_STATUS_SHIPPED,
    Status.ORDER_STATUS_IN_TRANSIT,
    Status.ORDER_STATUS_RECEIVED,
]


async def copy_at(c: Clients, customer_id: str, version: int) -> orders_pb2.CustomerOrders | None:
    copy = await c.orders.GetCustomerOrders(
        orders_pb2.GetCustomerOrdersRequest(customer_id=customer_id)
    )
    return copy if copy.customer_version == version else None


async def test_customer_flow_keeps_orders_copy_equal(clients: Clients) -> None:
    c = await clients.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[0]))
    )
    copy = await eventually(lambda: copy_at(clients, c.id, 1), what="copy v1")
    assert (copy.name, copy.contact, list(copy.addresses)) == (c.name, c.contact, list(c.addresses))
    patch = accounts_pb2.Customer(id=c.id, etag=c.etag)
    patch.addresses.extend(c.addresses)
    patch.addresses[1].city = "Sacramento"
    updated = await clients.accounts.UpdateCustomer(
        accounts_pb2.UpdateCustomerRequest(
            customer=patch, update_mask=field_mask_pb2.FieldMask(paths=["addresses"])
        )
    )
    copy = await eventually(lambda: copy_at(clients, c.id, 2), what="copy v2")
    assert list(copy.addresses) == list(updated.addresses)
    assert copy.addresses[1].city == "Sacramento"


async def test_order_flow_through_fulfillment_and_back(clients: Clients) -> None:
    c = await clients.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[1]))
    )
    await eventually(lambda: copy_at(clients, c.id, 1), what="copy")
    order = await clients.orders.CreateOrder(
        orders_pb2.CreateOrderRequest(customer_id=c.id, order=order_draft((0, 1), (2, 2)))
    )
    await clients.orders.ApproveOrder(orders_pb2.ApproveOrderRequest(order_id=order.order_id))
    get = fulfillment_pb2.GetFulfillmentRequest(order_id=order.order_id)
    f = await eventually(lambda: clients.fulfillment.GetFulfillment(get), what="fulfillment")
    assert f.status == Status.ORDER_STATUS_APPROVED
    assert f.shipping_address.type == common_pb2.ADDRESS_TYPE_SHIPPING
    assert f.name.last_name == "Lopez" and len(f.items) == 2

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await clients.fulfillment.ShipFulfillment(
            fulfillment_pb2.ShipFulfillmentRequest(order_id=order.order_id)
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    oid = order.order_id
    await clients.fulfillment.ProcessFulfillment(
        fulfillment_pb2.ProcessFulfillmentRequest(order_id=oid)
    )
    await clients.fulfillment.ShipFulfillment(
        fulfillment_pb2.ShipFulfillmentRequest(order_id=oid, note="UPS 1Z999")
    )
    await clients.fulfillment.MarkFulfillmentInTransit(
        fulfillment_pb2.MarkFulfillmentInTransitRequest(order_id=oid)
    )
    await clients.fulfillment.ConfirmFulfillmentReceived(
        fulfillment_pb2.ConfirmFulfillmentReceivedRequest(order_id=oid)
    )

    async def received() -> orders_pb2.Order | None:
        got = await clients.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=oid))
        return got if got.status == Status.ORDER_STATUS_RECEIVED else None

    final = await eventually(received, what="RECEIVED in orders")
    assert [e.status for e in final.status_events] == FULL_LIFECYCLE
    assert [e.note for e in final.status_events if e.status == Status.ORDER_STATUS_SHIPPED] == [
        "UPS 1Z999"
    ]
    listed = await clients.fulfillment.ListFulfillments(
        fulfillment_pb2.ListFulfillmentsRequest(status=Status.ORDER_STATUS_RECEIVED)
    )
    assert oid in [x.order_id for x in listed.fulfillments]


async def test_the_demo_converges(clients: Clients) -> None:
    lines: list[str] = []
    await run_demo(clients, lines.append, timeout=60)
    output = "\n".join(lines)
    assert "converged in" in output
    assert " NO" not in output  # every copy equal to accounts
    assert output.count("RECEIVED") >= 2
