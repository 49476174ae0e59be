"""Server reflection (svckit.reflection) in an in-process grpc.aio server: both protocol
versions, and every kind of symbol resolves, methods included (grpc/grpc#34743)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from svckit import reflection

ACCOUNTS = "storefront.accounts.v1.AccountsService"
Request: TypeAlias = reflection_pb2.ServerReflectionRequest
Response: TypeAlias = reflection_pb2.ServerReflectionResponse


@pytest.fixture
async def target() -> AsyncIterator[str]:
    server = grpc.aio.server()
    reflection.enable(server, [ACCOUNTS])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def ask(target: str, version: str, *requests: Request) -> list[Response]:
    """One ServerReflectionInfo stream under `version` (v1 or v1alpha), raw on the wire."""
    async with grpc.aio.insecure_channel(target) as channel:
        stream = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=Request.SerializeToString,
            response_deserializer=Response.FromString,
        )
        return [r async for r in stream(iter(requests))]


def files(response: Response) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    protos = response.file_descriptor_response.file_descriptor_proto
    parsed = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in protos]
    return {f.name: f for f in parsed}


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_both_versions_list_the_services_and_themselves(target: str, version: str) -> None:
    [reply] = await ask(target, version, Request(list_services=""))
    listed = {s.name for s in reply.list_services_response.service}
    assert listed == {ACCOUNTS, *reflection.SERVICE_NAMES}


@pytest.mark.parametrize(
    ("symbol", "file"),
    [
        (f"{ACCOUNTS}.GetCustomer", "storefront/accounts/v1/accounts.proto"),  # a method
        (ACCOUNTS, "storefront/accounts/v1/accounts.proto"),  # a service
        ("storefront.accounts.v1.Customer", "storefront/accounts/v1/accounts.proto"),
        ("storefront.accounts.v1.Customer.credit_cards", "storefront/accounts/v1/accounts.proto"),
        ("storefront.common.v1.OrderStatus", "storefront/common/v1/common.proto"),  # an enum
        ("storefront.common.v1.ORDER_STATUS_APPROVED", "storefront/common/v1/common.proto"),
        (
            "grpc.reflection.v1.ServerReflection.ServerReflectionInfo",
            "grpc/reflection/v1/reflection.proto",
        ),
    ],
)
async def test_every_kind_of_symbol_resolves_with_its_imports(
    target: str, symbol: str, file: str
) -> None:
    [reply] = await ask(target, "v1", Request(file_containing_symbol=symbol))
    found = files(reply)
    assert file in found, reply
    for dependency in found[file].dependency:  # what a client needs to build the file
        assert dependency in found


async def test_the_v1_file_describes_the_v1_service(target: str) -> None:
    [reply] = await ask(
        target, "v1", Request(file_by_filename="grpc/reflection/v1/reflection.proto")
    )
    [file] = files(reply).values()
    assert file.package == "grpc.reflection.v1"
    [method] = file.service[0].method
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"


@pytest.mark.parametrize(
    "symbol", ["storefront.accounts.v1.NoSuchThing", f"{ACCOUNTS}.NoSuchMethod", "nothing"]
)
async def test_an_unknown_symbol_is_not_found(target: str, symbol: str) -> None:
    [reply] = await ask(target, "v1alpha", Request(file_containing_symbol=symbol))
    assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
