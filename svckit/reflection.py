"""gRPC server reflection for grpcurl, ghz and friends: both protocol versions, every symbol.

grpcio-reflection serves only ``grpc.reflection.v1alpha`` and resolves only the symbols its
descriptor pool indexes, which leaves out methods, so ``describe Service.Method`` and ``ghz
--call Service/Method`` without a protoset fail with "Symbol not found" (grpc/grpc#34743). This
servicer finds a method in its service's file too, so every kind of symbol resolves, and is
mounted under ``grpc.reflection.v1`` as well: the two versions' messages are the same on
the wire, only the package differs, so one implementation serves both.

The descriptors come from ``gen/storefront.binpb``, which keeps ``json_name`` (Python's generated
descriptors drop it, and grpcurl would then print proto field names instead of lowerCamelCase).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer
from grpc_reflection.v1alpha._base import _file_descriptor_response  # answers like the rest

import storefront

V1ALPHA = reflection_pb2.DESCRIPTOR.package
V1 = "grpc.reflection.v1"
SERVICE_NAMES = (f"{V1}.ServerReflection", f"{V1ALPHA}.ServerReflection")
"""The reflection service under both names, as it lists itself."""


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto: v1alpha's file under the v1 package name."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = V1
    alpha, v1 = f".{V1ALPHA}.", f".{V1}."

    def rename(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            for field in message.field:
                if field.HasField("type_name"):
                    field.type_name = field.type_name.replace(alpha, v1, 1)
            rename(message.nested_type)

    rename(proto.message_type)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(alpha, v1, 1)
            method.output_type = method.output_type.replace(alpha, v1, 1)
    return proto


def descriptor_set_path() -> Path | None:
    """gen/storefront.binpb in the repo; the wheel ships it inside the package."""
    package = Path(next(iter(storefront.__path__)))
    candidates = (package.parent / "storefront.binpb", package / "descriptor.binpb")
    return next((p for p in candidates if p.exists()), None)


def pool() -> descriptor_pool.DescriptorPool:
    """Our descriptor set, plus health and both reflection files (served, and not in it)."""
    path = descriptor_set_path()
    if path is None:
        raise FileNotFoundError("gen/storefront.binpb is missing: run `make gen`")
    result = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file:
        result.Add(file)
    for module in (health_pb2, reflection_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        result.Add(proto)
    result.Add(_v1_file())
    return result


def file_of(pool: descriptor_pool.DescriptorPool, symbol: str) -> FileDescriptor:
    """The file defining ``symbol``, of any kind; KeyError if there is none.

    The pool finds messages, fields, enums, enum values, services and extensions itself, but not
    methods: ``pkg.Service.Method`` is looked up in its service.
    """
    try:
        return pool.FindFileContainingSymbol(symbol)
    except KeyError:
        service_name, _, method = symbol.rpartition(".")
        service = pool.FindServiceByName(service_name)  # KeyError: no such symbol at all
        if method not in service.methods_by_name:
            raise
        return service.file


class Reflection(ReflectionServicer):
    """grpcio-reflection's servicer, resolving every kind of symbol (see the module doc)."""

    def _file_containing_symbol(self, request, fully_qualified_name):
        try:
            file = file_of(self._pool, fully_qualified_name)
        except KeyError:
            return super()._file_containing_symbol(request, fully_qualified_name)
        return _file_descriptor_response(file, request)


def enable(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and itself."""
    servicer = Reflection([*service_names, *SERVICE_NAMES], pool=pool())
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    handler = grpc.method_handlers_generic_handler(
        f"{V1}.ServerReflection", {"ServerReflectionInfo": v1}
    )
    server.add_generic_rpc_handlers((handler,))
