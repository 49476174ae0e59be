"""fulfillment_svc: wiring only."""

from __future__ import annotations

import topology
from fulfillment_svc.grpc_api import FulfillmentServicer
from fulfillment_svc.handlers import FulfillmentHandlers
from fulfillment_svc.repository import FulfillmentRepository
from fulfillment_svc.summaries import summaries
from storefront.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from svckit.admin import Answering, ReadModel
from svckit.app import ServiceApp, run_service
from svckit.settings import Settings

SERVICE = fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"].full_name


def build(settings: Settings) -> ServiceApp:
    app = ServiceApp(settings)
    fulfillments = FulfillmentRepository(app.db)
    handlers = FulfillmentHandlers(fulfillments, app.outbox_relay(fulfillments.collection))
    app.on_start(fulfillments.ensure_indexes)
    app.owners("fulfillment", handlers.owner_of)
    app.add_service(
        fulfillment_pb2_grpc.add_FulfillmentServiceServicer_to_server,
        FulfillmentServicer(handlers),
        SERVICE,
    )
    app.consume(topology.SYSTEM.service(topology.FULFILLMENT).consumes, handlers.event_handlers())
    app.admin(
        Answering(handlers, summaries(fulfillments)),
        handlers,
        {topology.ORDER_FULFILLMENT: ReadModel(fulfillments.collection)},
    )
    return app


def main() -> None:
    run_service(build, topology.SYSTEM.service(topology.FULFILLMENT))
