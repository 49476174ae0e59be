"""Generated-stub clients of the topology's public services, from one set of endpoints, and
the tokens they present.

Every call carries a bearer token. `Clients.connect(..., tokens=...)` takes a `TokenFor`:
the token for one call, given its method and request. `acting_as_needed` is the one the
demo and the tests use: minted from the local issuer's key, each call goes as a principal
the policy allows to make it (staff, warehouse or operator where they may; otherwise the
customer the request names, and for a sign-up a new customer), so a whole flow runs with real
tokens and the services' checks in force. A caller with one identity passes `fixed(token)`.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import importlib
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.message import Message

import topology
from stack import issuer, tools
from stack.issuer import LocalIssuer
from storefront.accounts.v1 import accounts_pb2_grpc
from storefront.admin.v1 import admin_pb2_grpc
from storefront.catalog.v1 import catalog_pb2_grpc
from storefront.fulfillment.v1 import fulfillment_pb2_grpc
from storefront.orders.v1 import orders_pb2_grpc
from storefront_cli import endpoints
from svckit import policy
from svckit.authz import CUSTOMER, OPERATOR, STAFF, WAREHOUSE, Every, get_field
from svckit.ids import new_id

T = TypeVar("T")

MAX_SUBJECT = 1024
TokenFor = Callable[[str, Message], str | None]
"""(full method name, request) -> the bearer token to send, or None for none."""


def fixed(token: str) -> TokenFor:
    return lambda method, request: token


def acting_as_needed(issuer: LocalIssuer, *, ttl: float = 3600.0) -> TokenFor:
    """Tokens of a principal the policy lets make each call (see the module docstring)."""
    role_tokens = {role: issuer.role(role, ttl=ttl) for role in (STAFF, WAREHOUSE, OPERATOR)}

    def token_for(method: str, request: Message) -> str | None:
        rule = policy.POLICY.get(method)
        if rule is None or rule.public:
            return None
        for role, token in role_tokens.items():
            if isinstance(rule.grants.get(role), Every):
                return token
        grant = rule.grants.get(CUSTOMER)
        if grant is None:
            return role_tokens[STAFF]  # nobody may: the service says so
        named = get_field(request, grant.field)  # type: ignore[attr-defined]
        # A token for a kilobytes-long id could not travel in gRPC metadata (8 KiB); no
        # customer has one, so such a call goes as another customer (the policy: NOT_FOUND).
        subject = named if 0 < len(named) <= MAX_SUBJECT else new_id()
        return issuer.customer(subject, ttl=ttl)

    return token_for


def _with_token(metadata: Any, token: str | None) -> list[tuple[str, str]]:
    kept = [(k, v) for k, v in (metadata or ()) if k.lower() != "authorization"]
    return kept + ([("authorization", f"Bearer {token}")] if token else [])


class BearerInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds `authorization: Bearer <token>` to each unary call of an aio channel."""

    def __init__(self, tokens: TokenFor) -> None:
        self._tokens = tokens

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else method
        details = client_call_details._replace(
            metadata=_with_token(client_call_details.metadata, self._tokens(name, request))
        )
        return await continuation(details, request)


class SyncBearerInterceptor(grpc.UnaryUnaryClientInterceptor):
    """The same for a blocking channel (`grpc.intercept_channel`)."""

    _Details = collections.namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    )

    def __init__(self, tokens: TokenFor) -> None:
        self._tokens = tokens

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        d = client_call_details
        details = self._Details(
            d.method,
            d.timeout,
            _with_token(d.metadata, self._tokens(d.method, request)),
            d.credentials,
            d.wait_for_ready,
            getattr(d, "compression", None),
        )
        return continuation(details, request)


BALANCED = (("grpc.lb_policy_name", "round_robin"),)
"""Channel options that spread calls over every address a target resolves to (a service's
replicas: `ipv4:127.0.0.1:50051,127.0.0.1:50151`, or a headless Kubernetes service's pods)
and skip one whose connection failed, instead of gRPC's default pick_first (docs/scaling.md)."""


def channel(target: str, tokens: TokenFor) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target, options=BALANCED, interceptors=[BearerInterceptor(tokens)]
    )


def sync_channel(target: str, tokens: TokenFor) -> grpc.Channel:
    return grpc.intercept_channel(
        grpc.insecure_channel(target, options=BALANCED), SyncBearerInterceptor(tokens)
    )


CLIENT_SERVICES = tuple(s.name for s in topology.SYSTEM.public)
"""The services whose API the CLI calls, in `Clients.connect`'s order: the topology's public
ones, in declaration order."""

DESCRIPTORS = tools.REPO_ROOT / "gen" / "storefront.binpb"


@functools.cache
def stub_class(api: str) -> Callable[[grpc.aio.Channel], Any]:
    """The generated stub of a service, by its full name (the topology's `api`): found in the
    descriptor set `make gen` writes, so a new service's client needs no edit here."""
    package, _, name = api.rpartition(".")
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes())
    for f in descriptors.file:
        if f.package == package and any(s.name == name for s in f.service):
            base = f.name.removesuffix(".proto").replace("/", ".")
            grpc_module = importlib.import_module(f"{base}_pb2_grpc")
            stub: Callable[[grpc.aio.Channel], Any] = getattr(grpc_module, f"{name}Stub")
            return stub
    raise KeyError(f"no service {api} in {DESCRIPTORS}: run make gen")


@dataclass
class Clients:
    api: dict[str, Any]
    """A stub of each public service's API, by service name (CLIENT_SERVICES)."""
    channels: list[grpc.aio.Channel]
    admin: dict[str, admin_pb2_grpc.AdminServiceStub]
    """Each service's internal admin service, by service name (on its admin port), when
    `connect` was given where they are."""

    # Typed names of the APIs the demo and the operator commands call.
    @property
    def accounts(self) -> accounts_pb2_grpc.AccountsServiceStub:
        return cast(accounts_pb2_grpc.AccountsServiceStub, self.api[topology.ACCOUNTS])

    @property
    def orders(self) -> orders_pb2_grpc.OrdersServiceStub:
        return cast(orders_pb2_grpc.OrdersServiceStub, self.api[topology.ORDERS])

    @property
    def fulfillment(self) -> fulfillment_pb2_grpc.FulfillmentServiceStub:
        return cast(fulfillment_pb2_grpc.FulfillmentServiceStub, self.api[topology.FULFILLMENT])

    @property
    def catalog(self) -> catalog_pb2_grpc.CatalogServiceStub:
        return cast(catalog_pb2_grpc.CatalogServiceStub, self.api[topology.CATALOG])

    @classmethod
    def connect(
        cls,
        *targets: str,
        tokens: TokenFor,
        admin: Mapping[str, str] | None = None,
    ) -> Clients:
        """Clients of the public APIs, at `targets` in CLIENT_SERVICES' order; `admin`
        (service -> target, system.admin_target) adds the admin service of each service
        given, the topology's others included (replays and repairs of what they consume)."""
        named = dict(zip(CLIENT_SERVICES, targets, strict=True))
        channels = {name: channel(t, tokens) for name, t in named.items()}
        admin_channels = {s: channel(t, tokens) for s, t in (admin or {}).items()}
        apis = {s.name: s.api for s in topology.SYSTEM.public}
        return cls(
            {name: stub_class(apis[name])(c) for name, c in channels.items()},
            [*channels.values(), *admin_channels.values()],
            {s: admin_pb2_grpc.AdminServiceStub(c) for s, c in admin_channels.items()},
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 30.0, what: str = "condition"
) -> T:
    """Poll until `probe` returns a value (not None), or fail after `timeout` seconds.

    Convergence is asynchronous by design; this is how callers wait for it
    without fixed sleeps. NOT_FOUND and FAILED_PRECONDITION count as "not yet".
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.02
    while True:
        try:
            result = await probe()
            if result is not None:
                return result
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(0.25, delay * 1.5)


def operator_tokens() -> TokenFor:
    """What the operator commands call as: `STOREFRONT_TOKEN` (an operator token of the
    deployment's issuer), else tokens minted from the local run dir's issuer (the operator's
    for the admin service)."""
    token = os.environ.get("STOREFRONT_TOKEN")
    return fixed(token) if token else acting_as_needed(issuer.for_run_dir(endpoints.RUN_DIR))


def connect_endpoints(ep: endpoints.Endpoints) -> Clients:
    """Clients of the services and of every declared service's admin service where `ep` says
    they are, as the operator."""
    return Clients.connect(
        *(ep.grpc[s] for s in CLIENT_SERVICES), tokens=operator_tokens(), admin=ep.admin
    )


async def with_clients(ep: endpoints.Endpoints, use: Callable[[Clients], Awaitable[Any]]) -> int:
    """Run an operator command's coroutine with clients of the services, closed after."""
    clients = connect_endpoints(ep)
    try:
        return int(await use(clients))
    finally:
        await clients.close()
