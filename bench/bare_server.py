"""The bare gRPC ceiling: AccountsService answered by grpc.aio with a fixed Customer.

Same server options and event loop as a service (svckit.app), no interceptor, no database:
what Python's grpc.aio can do on this machine for a response of the same size.

    python -m bench.bare_server --port 50099
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

from bench.data import fixed_customer
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc


class BareAccounts(accounts_pb2_grpc.AccountsServiceServicer):
    def __init__(self) -> None:
        self.customer = fixed_customer()

    async def GetCustomer(
        self, request: accounts_pb2.GetCustomerRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Customer:
        return self.customer

    async def CreateCustomer(
        self, request: accounts_pb2.CreateCustomerRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Customer:
        return self.customer


async def serve(port: int) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 1),
        ]
    )
    # The generated base answers the other RPCs UNIMPLEMENTED; its stub calls them abstract.
    bare = BareAccounts()  # type: ignore[abstract]
    accounts_pb2_grpc.add_AccountsServiceServicer_to_server(bare, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def run(port: int) -> None:
    import uvloop

    uvloop.install()
    asyncio.run(serve(port))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    run(parser.parse_args().port)


if __name__ == "__main__":
    main()
