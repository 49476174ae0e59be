"""The bare gRPC ceiling: AccountsService answered by grpc.aio with a fixed Customer.

Same server options and event loop as a service (svckit.app), no interceptor, no database:
what Python's grpc.aio can do on this machine for a response of the same size.

With ``--find DB.COLLECTION`` (and MONGODB_URI in the environment) GetCustomer first awaits a
`find_one` of the requested id in that collection through `svckit.mongo.connect`, as the
service does, and still answers the fixed customer: grpc.aio and pymongo sharing one event
loop, with nothing of the service's own (no token, policy, mapping, metrics or tracing).

    python -m bench.bare_server --port 50099 [--find bench_accounts.customers]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import grpc
from pymongo.asynchronous.collection import AsyncCollection

from bench.data import fixed_customer
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from svckit import mongo
from svckit.documents import Document


class BareAccounts(accounts_pb2_grpc.AccountsServiceServicer):
    def __init__(self, collection: AsyncCollection[Document] | None = None) -> None:
        self.customer = fixed_customer()
        self.collection = collection

    async def GetCustomer(
        self, request: accounts_pb2.GetCustomerRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Customer:
        if self.collection is not None:
            await self.collection.find_one({"_id": request.customer_id})
        return self.customer

    async def CreateCustomer(
        self, request: accounts_pb2.CreateCustomerRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Customer:
        return self.customer


async def serve(port: int, find: str = "") -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 1),
        ]
    )
    # The generated base answers the other RPCs UNIMPLEMENTED; its stub calls them abstract.
    collection = None
    if find:
        db, _, name = find.partition(".")
        collection = mongo.connect(os.environ["MONGODB_URI"])[db][name]
    bare = BareAccounts(collection)  # type: ignore[abstract]
    accounts_pb2_grpc.add_AccountsServiceServicer_to_server(bare, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def run(port: int, find: str = "") -> None:
    import uvloop

    uvloop.install()
    asyncio.run(serve(port, find))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--find", default="", help="DB.COLLECTION to find_one in per GetCustomer")
    args = parser.parse_args()
    run(args.port, args.find)


if __name__ == "__main__":
    main()
