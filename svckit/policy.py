"""Who may call what: one rule per RPC of every service, and nothing else decides it.

Read a row as "this RPC: these roles, on these resources" (grants: svckit.authz). A service's
rows live in its own folder (`<package>/policy.py`: `RULES`, by method name of the public API
the topology declares for it); this module adds the rows of what every service serves (the
admin service, health, reflection) and knows no service. Every RPC the servers serve must
have a row (tests/unit/test_policy.py checks it against the descriptors, and that a service
declaring an API has rows for exactly its methods); one without is refused.
docs/security.md shows the table as a matrix: `python -m svckit.policy` prints it, and a test
keeps the two equal.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Mapping

from svckit.authz import EVERY, PUBLIC, ROLES, Every, Own, OwnedVia, Rule, SignUp, allow

ADMIN = "/storefront.admin.v1.AdminService"

COMMON: dict[str, Rule] = {
    # The internal admin service every service serves on its own port (repairs, replays):
    # the operator only, not staff; routed by neither Envoy nor the gateway.
    f"{ADMIN}/Republish": allow(operator=EVERY),
    f"{ADMIN}/ReplayTopic": allow(operator=EVERY),
    f"{ADMIN}/ReplayParked": allow(operator=EVERY),
    f"{ADMIN}/ListSummaries": allow(operator=EVERY),
    f"{ADMIN}/MigrateParked": allow(operator=EVERY),
    # Probes and tooling, served on the service and admin ports only (Envoy and the gateway
    # route nothing but the public APIs): no token.
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.health.v1.Health/List": PUBLIC,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": PUBLIC,
}


def service_rules(api: str, rules: Mapping[str, Rule]) -> dict[str, Rule]:
    """A service's rules (method name -> rule) as rows of the table (full method -> rule)."""
    return {f"/{api}/{method}": rule for method, rule in rules.items()}


def load(apis: Iterable[tuple[str, str]]) -> dict[str, Rule]:
    """The table for services given as (package, public API): each one's `<package>.policy`
    `RULES` (a service with an API and no policy module is an error: its RPCs would all be
    refused), then the rows every service shares."""
    table: dict[str, Rule] = {}
    for package, api in apis:
        module = importlib.import_module(f"{package}.policy")
        table.update(service_rules(api, module.RULES))
    return {**table, **COMMON}


def _declared() -> dict[str, Rule]:
    import topology  # the declaration, read as data: which packages serve which API

    return load((s.package, s.api) for s in topology.SYSTEM.public)


POLICY: dict[str, Rule] = _declared()

CELLS = {Every: "all", Own: "own", OwnedVia: "own", SignUp: "self"}
"""How docs/security.md writes a grant. "403": the role has none (PERMISSION_DENIED); "401":
no valid token (UNAUTHENTICATED); "own": the caller's own resources, another's answer 404;
"self": only as themselves, another id answers 403."""
COLUMNS = ("anonymous", *ROLES)


def matrix() -> str:
    """The RPC x caller matrix of docs/security.md, as a Markdown table."""
    lines = [
        "| RPC | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for method, rule in POLICY.items():
        if rule.public:
            cells = ["public"] * len(COLUMNS)
        else:
            grants = [rule.grants.get(r) for r in ROLES]
            cells = ["401", *(CELLS[type(g)] if g else "403" for g in grants)]
        lines.append(f"| `{method.lstrip('/')}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(matrix())
