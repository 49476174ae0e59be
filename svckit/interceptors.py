"""The server interceptor: admission, authentication and policy, domain errors to gRPC status,
metrics, a trace span and log context, around every unary RPC.

Every unary RPC passes through here once, so each service gets the same status mapping, the
go-grpc-prometheus metrics and an OpenTelemetry SERVER span (whose trace id the JSON logs and
the events the RPC commits carry) without writing any.

It is the hot path of every call, so what depends only on the method is done once per method,
the first time it is called (`ServerInterceptor.wrap`): its labels, its metric series, its
policy rule, its span attributes. A call then reads its metadata once (svckit.auth.headers_of)
for both the token and the caller's trace, and pays for a recorded span only while something
receives spans (svckit.tracing.ServerSpan). docs/performance.md says what each of these moved.
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
from opentelemetry.trace import Status, StatusCode

from svckit import failures, logs, metrics, text, tracing
from svckit.auth import headers_of
from svckit.authz import Gatekeeper, refused
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

MAX_METHODS = 1024
"""Wrapped handlers kept; only methods the server has are wrapped, so this is never reached
by a real server: it bounds the table against anything unforeseen."""


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
    """`service` labels the metrics and spans: several services may share one process.
    `gatekeeper` (token and policy) guards every method that is not public; without it no
    call is checked (unit tests of the plumbing only: ServiceApp always gives one)."""

    def __init__(self, service: str = "", gatekeeper: Gatekeeper | None = None) -> None:
        self._service = service
        self._gatekeeper = gatekeeper
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler  # no such method: grpc answers UNIMPLEMENTED; nothing kept
            wrapped = self.wrap(method, handler)
            if len(self._wrapped) < MAX_METHODS:
                self._wrapped[method] = wrapped
        return wrapped

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler` of `method` with everything every call goes through, bound once."""
        gatekeeper = self._gatekeeper
        if handler.unary_unary is None:
            # Streaming RPCs (health watch, reflection) pass through, if public.
            if gatekeeper is not None and not gatekeeper.public(method):
                return refused(handler, method)
            return handler
        check = gatekeeper.checker(method) if gatekeeper is not None else None
        inner = handler.unary_unary
        grpc_service, name = _split(method)
        rpc = f"{grpc_service}/{name}"
        series = metrics.RpcMetrics(self._service, "unary", grpc_service, name)
        attributes = {
            "rpc.system": "grpc",
            "rpc.service": grpc_service,
            "rpc.method": name,
            tracing.SERVICE_ATTRIBUTE: self._service,
        }

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            series.started.inc()
            headers = headers_of(context.invocation_metadata())
            token = logs.current_rpc.set(rpc)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            with tracing.ServerSpan(
                rpc, tracing.context_from_metadata(headers), attributes
            ) as span:
                try:
                    admit(request)
                    if check is not None:
                        await check(headers, request)
                    return await inner(request, context)
                except DomainError as exc:
                    code = exc.code
                    await context.abort_with_status(rpc_status.to_status(exc.to_status()))
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except asyncio.CancelledError:
                    # grpc cancels the handler when the caller's deadline passes or the caller
                    # goes away: the work stops there (a write that already committed is safe:
                    # its outbox entry is swept).
                    remaining = context.time_remaining()
                    expired = remaining is not None and remaining <= 0
                    code = (
                        grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                    )
                    raise
                except Exception as exc:
                    # The class only, as in the logs: driver errors quote documents.
                    span.add_event("exception", {"exception.type": logs.describe(exc)})
                    if failures.is_transient(exc):
                        # The database or broker is away: the caller should retry, as for
                        # any outage.
                        code = grpc.StatusCode.UNAVAILABLE
                        log.warning("dependency unavailable: %s", type(exc).__name__)
                        await context.abort(code, "a backing service is unavailable; retry")
                    code = grpc.StatusCode.INTERNAL
                    log.exception("unhandled error")
                    await context.abort(grpc.StatusCode.INTERNAL, "internal error")
                finally:
                    if span.is_recording():
                        span.set_attribute("rpc.grpc.status_code", code.value[0])
                        if code in SERVER_ERRORS:
                            span.set_status(Status(StatusCode.ERROR, code.name))
                    series.handled(code.name).inc()
                    series.seconds.observe(time.perf_counter() - started)
                    logs.current_rpc.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
