"""orders_svc: wiring only."""

from __future__ import annotations

from orders_svc.grpc_api import OrdersServicer
from orders_svc.handlers import CONSUMES, OrdersHandlers
from orders_svc.repository import CustomerCopies, OrderRepository
from storefront.orders.v1 import orders_pb2, orders_pb2_grpc
from svckit.app import ServiceApp, run_service
from svckit.settings import Settings

SERVICE = orders_pb2.DESCRIPTOR.services_by_name["OrdersService"].full_name


def build(settings: Settings) -> ServiceApp:
    app = ServiceApp(settings)
    orders = OrderRepository(app.db)
    handlers = OrdersHandlers(orders, CustomerCopies(app.db), app.outbox_relay(orders.collection))
    app.on_start(orders.ensure_indexes)
    app.owners("order", handlers.owner_of)
    app.consume(CONSUMES, handlers.event_handlers(), handlers.batch_handlers())
    app.admin(handlers, handlers)
    app.add_service(
        orders_pb2_grpc.add_OrdersServiceServicer_to_server, OrdersServicer(handlers), SERVICE
    )
    return app


def main() -> None:
    run_service(build, Settings.from_env("orders", grpc_port=50052, metrics_port=9465))
