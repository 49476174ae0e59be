"""A new service needs its topology entry, its folder and its proto, nothing else: a loyalty
service made up here (its proto built in memory, its policy module registered as its folder
would be) gets its policy rows and its gateway REST routes from them alone."""

from __future__ import annotations

import sys
import types

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

import topology
from istio import gen_topology
from svckit import policy
from svckit.authz import EVERY, Own, allow

API = "storefront.loyalty.v1.LoyaltyService"
PACKAGE = "loyalty_made_up_svc"
LOYALTY = topology.Service(
    "loyalty", grpc_port=50059, metrics_port=9469, admin_port=50069, package=PACKAGE, api=API
)


def descriptors_with_loyalty() -> bytes:
    """The generated descriptor set plus loyalty's proto, as `make gen` would write it."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(gen_topology.DESCRIPTORS.read_bytes())
    f = fds.file.add(name="storefront/loyalty/v1/loyalty.proto", package="storefront.loyalty.v1")
    f.dependency.append("google/api/annotations.proto")
    for message in ("GetPointsRequest", "Points", "ListRewardsRequest", "Rewards"):
        f.message_type.add(name=message)
    service = f.service.add(name="LoyaltyService")
    for name, request, reply, path in (
        ("GetPoints", "GetPointsRequest", "Points", "/v1/customers/{customer_id}/points"),
        ("ListRewards", "ListRewardsRequest", "Rewards", "/v1/rewards"),
    ):
        m = service.method.add(
            name=name,
            input_type=f".storefront.loyalty.v1.{request}",
            output_type=f".storefront.loyalty.v1.{reply}",
        )
        m.options.Extensions[annotations_pb2.http].get = path
    return fds.SerializeToString()


@pytest.fixture
def loyalty_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """`loyalty_made_up_svc/policy.py`, as the service's folder holds it."""
    package = types.ModuleType(PACKAGE)
    package.__path__ = []
    module = types.ModuleType(f"{PACKAGE}.policy")
    module.RULES = {  # type: ignore[attr-defined]
        "GetPoints": allow(customer=Own("customer_id"), staff=EVERY),
        "ListRewards": allow(customer=EVERY, staff=EVERY),
    }
    monkeypatch.setitem(sys.modules, PACKAGE, package)
    monkeypatch.setitem(sys.modules, f"{PACKAGE}.policy", module)


def test_its_policy_rows_come_from_its_folder(loyalty_folder: None) -> None:
    system = topology.SYSTEM.adding(LOYALTY)
    table = policy.load((s.package, s.api) for s in system.public)
    assert table[f"/{API}/GetPoints"].grants["customer"] == Own("customer_id")
    assert f"/{API}/ListRewards" in table
    assert set(policy.POLICY) <= set(table)  # the others' rows and the shared ones stay


def test_a_service_with_an_api_and_no_policy_module_is_refused() -> None:
    with pytest.raises(ModuleNotFoundError):
        policy.load([("no_such_made_up_svc", API)])


def test_its_rest_routes_come_from_its_http_annotations() -> None:
    system = topology.SYSTEM.adding(LOYALTY)
    routes = gen_topology.rest_routes(system, descriptors_with_loyalty())
    assert "name: loyalty-rest-customers-points" in routes
    assert "regex: /v1/customers/[^/]+/points(/.*|:.*)?" in routes
    assert "name: loyalty-rest\n" in routes and "prefix: /v1/rewards" in routes
    # More specific first: its regex comes before accounts' /v1/customers prefix.
    assert routes.index("/v1/customers/[^/]+/points") < routes.index("prefix: /v1/customers")
    assert "host: loyalty.storefront.svc.cluster.local" in routes


def test_two_apis_declaring_one_path_are_refused() -> None:
    thief = topology.Service(
        "thief",
        grpc_port=50058,
        metrics_port=9470,
        admin_port=50068,
        api="storefront.loyalty.v1.LoyaltyService",
    )
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptors_with_loyalty())
    [f] = [f for f in fds.file if f.package == "storefront.loyalty.v1"]
    f.service[0].method[1].options.Extensions[annotations_pb2.http].get = "/v1/orders"
    with pytest.raises(ValueError, match="both declare"):
        gen_topology.rest_routes(topology.SYSTEM.adding(thief), fds.SerializeToString())


async def test_every_public_api_gets_a_client_from_its_name() -> None:
    """The CLI's clients are built from the topology's `api` names and the generated code,
    not from a list in clients.py."""
    from storefront_cli import clients

    assert clients.CLIENT_SERVICES == tuple(s.name for s in topology.SYSTEM.public)
    c = clients.Clients.connect(
        *(f"127.0.0.1:{1 + i}" for i, _ in enumerate(clients.CLIENT_SERVICES)),
        tokens=clients.fixed("t"),
    )
    try:
        for s in topology.SYSTEM.public:
            stub = c.api[s.name]
            assert type(stub).__name__ == s.api.rpartition(".")[2] + "Stub"
        assert c.orders is c.api[topology.ORDERS]
    finally:
        await c.close()
    with pytest.raises(KeyError, match="make gen"):
        clients.stub_class("storefront.loyalty.v1.LoyaltyService")
