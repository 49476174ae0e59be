"""What svckit's server wrapper costs a call, in-process: `uv run python -m bench.interceptor_cost`.

A GetCustomer whose handler returns at once goes through `svckit.interceptors.ServerInterceptor`
as grpc.aio calls it (intercept_service, then the handler it returns) with the Gatekeeper of the
real policy, a verifier that answers from memory (as the verified-token cache does), the SDK
installed and nothing exporting (a service's default). No network, no database: the figure is
the wrapper alone, microseconds per call (best and median of 5 rounds), beside the bare handler.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import grpc

from storefront.accounts.v1 import accounts_pb2
from svckit import auth, authz, policy, tracing
from svckit.interceptors import ServerInterceptor

METHOD = "/storefront.accounts.v1.AccountsService/GetCustomer"
METADATA = (("authorization", "Bearer a.b.c"), ("user-agent", "grpc-go/1.70"), ("te", "trailers"))
CALLS = 20_000


class _Verifier(auth.TokenVerifier):
    def __init__(self) -> None:  # no config: every token is staff's, as from the cache
        pass

    async def verify(self, token: str) -> auth.Principal:
        return auth.Principal("staff-1", frozenset({authz.STAFF}))


class _Context:
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return METADATA

    def time_remaining(self) -> float:
        return 10.0


class _Details:
    method = METHOD
    invocation_metadata = METADATA


async def _rounds() -> tuple[list[float], float]:
    response = accounts_pb2.Customer(id="c-1")

    async def handler(request: Any, context: Any) -> accounts_pb2.Customer:
        return response

    base = grpc.unary_unary_rpc_method_handler(handler)

    async def continuation(details: Any) -> grpc.RpcMethodHandler:
        return base

    gatekeeper = authz.Gatekeeper(_Verifier(), authz.Authorizer(policy.POLICY))
    interceptor = ServerInterceptor("accounts", gatekeeper)
    request = accounts_pb2.GetCustomerRequest(customer_id="c-1")
    context, details = _Context(), _Details()

    async def call() -> None:
        wrapped = await interceptor.intercept_service(continuation, details)
        await wrapped.unary_unary(request, context)

    for _ in range(2000):
        await call()
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(CALLS):
            await call()
        rounds.append((time.perf_counter() - started) / CALLS * 1e6)
    started = time.perf_counter()
    for _ in range(CALLS):
        await handler(request, context)
    return rounds, (time.perf_counter() - started) / CALLS * 1e6


def main() -> None:
    tracing.configure("bench", tracing.TracingConfig())
    rounds, bare = asyncio.run(_rounds())
    print(
        f"wrapper: {min(rounds):.1f} us/call best, {statistics.median(rounds):.1f} median; "
        f"bare handler {bare:.2f} us"
    )


if __name__ == "__main__":
    main()
