"""accounts_svc: wiring only."""

from __future__ import annotations

import topology
from accounts_svc.cards import CardKeyConfig, CardVault
from accounts_svc.grpc_api import AccountsServicer
from accounts_svc.handlers import AccountsHandlers
from accounts_svc.repository import CustomerRepository
from accounts_svc.summaries import summaries
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from svckit.admin import Answering
from svckit.app import ServiceApp, run_service
from svckit.settings import Settings

SERVICE = accounts_pb2.DESCRIPTOR.services_by_name["AccountsService"].full_name


def build(settings: Settings, card_keys: CardKeyConfig | None = None) -> ServiceApp:
    app = ServiceApp(settings)
    keys = card_keys or CardKeyConfig.from_env(settings.mongodb_database)
    customers = CustomerRepository(app.db, CardVault(keys, app.mongo))
    handlers = AccountsHandlers(customers, app.outbox_relay(customers.collection))
    app.on_start(customers.ensure_indexes)
    app.admin(Answering(handlers, summaries(customers)))
    app.background(handlers.follow_card_keys)
    app.add_service(
        accounts_pb2_grpc.add_AccountsServiceServicer_to_server, AccountsServicer(handlers), SERVICE
    )
    return app


def main() -> None:
    run_service(build, topology.SYSTEM.service(topology.ACCOUNTS))
