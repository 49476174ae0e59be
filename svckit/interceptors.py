"""The server interceptor: domain errors to gRPC status, metrics, a trace span, log context.

Every unary RPC passes through here once, so each service gets the same status
mapping, the go-grpc-prometheus metrics and an OpenTelemetry SERVER span (whose
trace id the JSON logs and the events the RPC commits carry) without writing any.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_status import rpc_status
from opentelemetry.trace import SpanKind, Status, StatusCode

from svckit import failures, logs, metrics, text, tracing
from svckit.errors import DomainError

log = logging.getLogger(__name__)

# The codes OpenTelemetry's RPC conventions count as a server-side failure; the
# rest (NOT_FOUND, INVALID_ARGUMENT, ...) are the caller's problem, not ours.
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def admit(request: Message) -> None:
    """What every request goes through before the policy and the handler, whatever the
    transport (native gRPC, gRPC-Web and JSON through Envoy all arrive here as protobuf).

    Unknown fields are dropped, at every depth: a field this server's protos do not declare
    would otherwise ride along through ``CopyFrom`` into stored state and events (issue 25
    finding 1: a 2 MB unknown field inside ``customer.name`` became a 2 MB event). Then every
    string is held to the generic budget and refused with NUL (svckit.text), before any
    domain rule or regex looks at it. (The whole message is bounded by the server's
    ``grpc.max_receive_message_length``, svckit.settings.)
    """
    request.DiscardUnknownFields()
    text.refuse_bad_text(request)


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """`service` labels the metrics and spans: several services may share one process."""

    def __init__(self, service: str = "") -> None:
        self._service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # streaming RPCs (health watch, reflection) pass through
        grpc_service, method = _split(handler_call_details.method)
        inner = handler.unary_unary
        labels = (self._service, "unary", grpc_service, method)
        attributes = {
            "rpc.system": "grpc",
            "rpc.service": grpc_service,
            "rpc.method": method,
            tracing.SERVICE_ATTRIBUTE: self._service,
        }
        parent = tracing.context_from_metadata(handler_call_details.invocation_metadata)

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metrics.GRPC_STARTED.labels(*labels).inc()
            token = logs.current_rpc.set(f"{grpc_service}/{method}")
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            with tracing.tracer().start_as_current_span(
                f"{grpc_service}/{method}",
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    # Honour the caller's deadline: stop working once nobody waits for us.
                    # A write that already committed is safe: its outbox entry is swept.
                    async with asyncio.timeout(context.time_remaining()):
                        admit(request)
                        return await inner(request, context)
                except TimeoutError:
                    code = grpc.StatusCode.DEADLINE_EXCEEDED
                    await context.abort(code, "deadline exceeded")
                except DomainError as exc:
                    code = exc.code
                    await context.abort_with_status(rpc_status.to_status(exc.to_status()))
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except Exception as exc:
                    # The class only, as in the logs: driver errors quote documents.
                    span.add_event("exception", {"exception.type": logs.describe(exc)})
                    if failures.is_transient(exc):
                        # The database or broker is away: the caller should retry, as for
                        # any outage. The class only: driver errors quote documents.
                        code = grpc.StatusCode.UNAVAILABLE
                        log.warning("dependency unavailable: %s", type(exc).__name__)
                        await context.abort(code, "a backing service is unavailable; retry")
                    code = grpc.StatusCode.INTERNAL
                    log.exception("unhandled error")
                    await context.abort(grpc.StatusCode.INTERNAL, "internal error")
                finally:
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code in SERVER_ERRORS:
                        span.set_status(Status(StatusCode.ERROR, code.name))
                    metrics.GRPC_HANDLED.labels(*labels, code.name).inc()
                    metrics.GRPC_HANDLING_SECONDS.labels(*labels).observe(
                        time.perf_counter() - started
                    )
                    logs.current_rpc.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
