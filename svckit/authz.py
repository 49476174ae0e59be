"""Authorization: the one place where a verified caller meets the declared policy.

A `Rule` per RPC (the table is `svckit.policy.POLICY`) says which roles may call it and on
which resources. `Authorizer.check` applies it before any handler runs; `Gatekeeper`
puts token verification and that check in front of every RPC of a server. Handlers never ask
who is calling.

Grants, for one role on one RPC:
- `EVERY`: any resource.
- `Own(field)`: the resource the request names in `field` is the caller's own customer id
  (the token's sub). Another id answers NOT_FOUND, as if it did not exist, so ids cannot be
  probed; `fill=True` turns an empty field into the caller's id (a list filtered to them).
- `OwnedVia(field, resource)`: the request names a resource (an order) whose owner the
  service looks up (`owners[resource]`); not the caller's, or absent: NOT_FOUND alike.
- `SignUp(field)`: creating one's own account: the id is the caller's sub (an empty field is
  filled with it); any other id is PERMISSION_DENIED.

Denials: no or bad token -> UNAUTHENTICATED; no grant for any of the caller's roles ->
PERMISSION_DENIED; another customer's resource -> NOT_FOUND. Each is logged once, with the
principal, the RPC and the reason, never the token.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message

from svckit.auth import Principal, TokenVerifier, bearer_token
from svckit.errors import NotFound, PermissionDenied, Unauthenticated, require

log = logging.getLogger(__name__)

CUSTOMER = "customer"
STAFF = "staff"
WAREHOUSE = "warehouse"
OPERATOR = "operator"
"""Runs the system (repairs, replays, the console's actions); not staff, who run the shop."""
ROLES = (CUSTOMER, STAFF, WAREHOUSE, OPERATOR)

OwnerLookup = Callable[[str], Awaitable[str | None]]
"""Resource id -> the customer id that owns it, or None when there is no such resource."""


class Grant:
    """What one role may do with one RPC."""


@dataclass(frozen=True)
class Every(Grant):
    pass


EVERY = Every()


@dataclass(frozen=True)
class Own(Grant):
    field: str
    noun: str = "customer"
    fill: bool = False


@dataclass(frozen=True)
class OwnedVia(Grant):
    field: str
    resource: str
    noun: str


@dataclass(frozen=True)
class SignUp(Grant):
    field: str


@dataclass(frozen=True)
class Rule:
    grants: Mapping[str, Grant] = field(default_factory=dict)
    public: bool = False
    """No token needed (health, reflection)."""


PUBLIC = Rule(public=True)


def allow(**grants: Grant) -> Rule:
    unknown = set(grants) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown role(s) {sorted(unknown)}")
    return Rule(grants=grants)


def get_field(message: Message, path: str) -> str:
    value: Any = message
    for part in path.split("."):
        value = getattr(value, part)
    return str(value)


def set_field(message: Message, path: str, value: str) -> None:
    *parents, last = path.split(".")
    target: Any = message
    for part in parents:
        target = getattr(target, part)
    setattr(target, last, value)


class Authorizer:
    def __init__(
        self, policy: Mapping[str, Rule], owners: Mapping[str, OwnerLookup] | None = None
    ) -> None:
        self.policy = policy
        self.owners = dict(owners or {})

    def rule(self, method: str) -> Rule | None:
        return self.policy.get(method)

    async def check(self, method: str, principal: Principal, request: Message) -> None:
        """Return if `principal` may make this call; raise the denial otherwise.

        May fill a field of `request` (an `Own(fill=True)` or `SignUp` grant)."""
        await self.check_rule(method, self.policy.get(method), principal, request)

    async def check_rule(
        self, method: str, rule: Rule | None, principal: Principal, request: Message
    ) -> None:
        """`check` with the method's rule already looked up (once per method, by Gatekeeper)."""
        if rule is None:
            raise PermissionDenied(f"{method} has no declared policy")
        grants = [rule.grants[r] for r in sorted(principal.roles) if r in rule.grants]
        if not grants:
            raise PermissionDenied(f"not allowed for role(s) {sorted(principal.roles)}")
        if any(isinstance(g, Every) for g in grants):
            return
        for grant in grants:
            await self._owned(grant, principal, request)

    async def _owned(self, grant: Grant, principal: Principal, request: Message) -> None:
        if isinstance(grant, SignUp):
            value = get_field(request, grant.field)
            if not value:
                set_field(request, grant.field, principal.subject)
            elif value != principal.subject:
                raise PermissionDenied("customers sign up with their own id only")
        elif isinstance(grant, Own):
            value = get_field(request, grant.field)
            if not value and grant.fill:
                set_field(request, grant.field, principal.subject)
            elif value != principal.subject:
                require(value, grant.field)
                raise NotFound(f"{grant.noun} {value!r} not found")
        elif isinstance(grant, OwnedVia):
            value = get_field(request, grant.field)
            require(value, grant.field)
            owner = await self.owners[grant.resource](value)
            if owner != principal.subject:
                raise NotFound(f"{grant.noun} {value!r} not found")
        else:
            raise TypeError(f"unknown grant {grant!r}")


_DENIALS = (Unauthenticated, PermissionDenied, NotFound)


class Gatekeeper:
    """Verifies the bearer token and applies the policy before every non-public RPC.

    `svckit.interceptors.ServerInterceptor` puts `checker(method)` in front of each method's
    handler when it wraps it (once per method), inside its own error mapping, which turns the
    denials (domain errors) into statuses and counts them like any other outcome. A method
    without a rule is refused, so a new RPC cannot ship open by omission."""

    def __init__(self, verifier: TokenVerifier, authorizer: Authorizer) -> None:
        self.verifier = verifier
        self.authorizer = authorizer

    def public(self, method: str) -> bool:
        rule = self.authorizer.rule(method)
        return rule is not None and rule.public

    def checker(self, method: str) -> Checker | None:
        """What a call of `method` must pass, its rule bound now; None if it is public."""
        if self.public(method):
            return None
        rule = self.authorizer.rule(method)

        async def check(headers: Mapping[str, str], request: Message) -> None:
            principal: Principal | str = "anonymous"
            try:
                principal = await self.verifier.verify(bearer_token(headers))
                await self.authorizer.check_rule(method, rule, principal, request)
            except _DENIALS as exc:
                log.warning("denied %s to %s: %s", method, principal, exc.message)
                raise

        return check


Checker = Callable[[Mapping[str, str], Message], Awaitable[None]]
"""Raises the denial unless the call (its metadata as svckit.auth.headers_of reads it, and
its request) may proceed."""


def refused(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """Streaming RPCs are only served when public (health watch, reflection)."""
    log.warning("denied %s: streaming RPC without a public rule", method)

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} is not served")

    kind = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_unary_rpc_method_handler
        if handler.stream_unary
        else grpc.stream_stream_rpc_method_handler
    )
    return kind(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
