"""The server interceptor: domain errors to gRPC status, metrics, log context."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_status import rpc_status

from svckit import logs, metrics
from svckit.errors import DomainError

log = logging.getLogger(__name__)


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class ServerInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # streaming RPCs (health watch, reflection) pass through
        service, method = _split(handler_call_details.method)
        inner = handler.unary_unary

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            labels = ("unary", service, method)
            metrics.GRPC_STARTED.labels(*labels).inc()
            token = logs.current_rpc.set(f"{service}/{method}")
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await inner(request, context)
            except DomainError as exc:
                code = exc.code
                await context.abort_with_status(rpc_status.to_status(exc.to_status()))
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[assignment]
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error")
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            finally:
                metrics.GRPC_HANDLED.labels(*labels, code.name).inc()
                metrics.GRPC_HANDLING_SECONDS.labels(*labels).observe(time.perf_counter() - started)
                logs.current_rpc.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
