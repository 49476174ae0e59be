"""catalog_svc: wiring only."""

from __future__ import annotations

import topology
from catalog_svc.grpc_api import CatalogServicer
from catalog_svc.handlers import CatalogHandlers
from catalog_svc.repository import ProductRepository
from catalog_svc.summaries import summaries
from storefront.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from svckit.admin import Answering
from svckit.app import ServiceApp, run_service
from svckit.settings import Settings

SERVICE = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name


def build(settings: Settings) -> ServiceApp:
    app = ServiceApp(settings)
    products = ProductRepository(app.db)
    handlers = CatalogHandlers(products, app.outbox_relay(products.collection))
    app.admin(Answering(handlers, summaries(products)))
    app.add_service(
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server, CatalogServicer(handlers), SERVICE
    )
    return app


def main() -> None:
    run_service(build, topology.SYSTEM.service(topology.CATALOG))
