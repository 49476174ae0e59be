"""orders_svc: wiring only."""

from __future__ import annotations

import topology
from orders_svc.grpc_api import OrdersServicer
from orders_svc.handlers import OrdersHandlers
from orders_svc.repository import CustomerCopies, OrderRepository, ProductCopies
from orders_svc.summaries import summaries
from storefront.orders.v1 import orders_pb2, orders_pb2_grpc
from svckit.admin import Answering, ReadModel
from svckit.app import ServiceApp, run_service
from svckit.settings import Settings

SERVICE = orders_pb2.DESCRIPTOR.services_by_name["OrdersService"].full_name


def build(settings: Settings) -> ServiceApp:
    app = ServiceApp(settings)
    orders = OrderRepository(app.db)
    copies = CustomerCopies(app.db)
    products = ProductCopies(app.db)
    handlers = OrdersHandlers(orders, copies, products, app.outbox_relay(orders.collection))
    app.on_start(orders.ensure_indexes)
    app.owners("order", handlers.owner_of)
    app.consume(
        topology.SYSTEM.service(topology.ORDERS).consumes,
        handlers.event_handlers(),
        handlers.batch_handlers(),
    )
    app.admin(
        Answering(handlers, summaries(orders, copies, products)),
        handlers,
        {
            topology.CUSTOMER_CHANGES: ReadModel(copies.collection),
            # Re-applying status changes bumps an order's version, not its content.
            topology.ORDER_STATUS: ReadModel(
                orders.collection, frozenset({"version", "update_time"})
            ),
            topology.PRODUCT_CHANGES: ReadModel(products.collection),
        },
    )
    app.add_service(
        orders_pb2_grpc.add_OrdersServiceServicer_to_server, OrdersServicer(handlers), SERVICE
    )
    return app


def main() -> None:
    run_service(build, topology.SYSTEM.service(topology.ORDERS))
