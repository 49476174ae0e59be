"""Structured JSON logs: one object per line with the service, the RPC, the
event id and the trace id of whatever the line was logged under.

Why: the interceptor sets `current_rpc`, the consumer sets `current_event`, and
the trace id comes from the active OpenTelemetry span, so any line, from any
module, can be joined to its request, its event and its trace without the
caller passing them around. `current_trace` is only a fallback for code that
knows a trace id but runs outside a span.

No personal or card data: an exception is written as its class and error code only
(`describe`), never its message, whether it is logged with `log.exception` or passed as an
argument: pymongo's messages quote the document a write was refused for, and a protobuf
decode error can quote the payload. Tracebacks keep their frames (file, line, code), not
the messages.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType

from svckit import tracing

current_rpc: contextvars.ContextVar[str] = contextvars.ContextVar("rpc", default="")
current_event: contextvars.ContextVar[str] = contextvars.ContextVar("event_id", default="")
current_trace: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")


_URI_PASSWORD = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+):[^@\s]*@")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:password|secret|token|authMechanismProperties|tlsCertificateKeyFilePassword)=)"
    r"[^&;\s]*"
)


def redacted(text: str) -> str:
    """`text` with the passwords of the URIs in it replaced: mongodb://user:***@host/..."""
    return _SECRET_PARAM.sub(r"\1***", _URI_PASSWORD.sub(r"\1:***@", text))


def describe(exc: BaseException) -> str:
    """What may be logged of an exception: its class and, where it has one, its error code
    (MongoDB's `code`, a gRPC status, a domain error's reason), never its message."""
    parts = [type(exc).__name__]
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.aio.AioRpcError
        try:
            code = code()
        except Exception:  # noqa: BLE001 - no code then
            code = None
    if isinstance(code, int | str) or hasattr(code, "name"):
        parts.append(f"code={getattr(code, 'name', code)}")
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        parts.append(f"reason={reason}")
    return " ".join(parts)


def describe_chain(exc: BaseException) -> str:
    """`describe` of an exception and of its causes, outermost first."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 5:
        seen.append(describe(current))
        current = current.__cause__ or current.__context__
    return " <- ".join(seen)


def _frames(tb: TracebackType | None) -> str:
    return "".join(traceback.format_list(traceback.extract_tb(tb)))


def _safe_arg(arg: object) -> object:
    return describe(arg) if isinstance(arg, BaseException) else arg


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = tracing.current_ids()
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": self._message(record),
            "rpc": current_rpc.get(),
            "event_id": current_event.get(),
            "trace_id": trace_id or current_trace.get(),
            "span_id": span_id,
        }
        if record.exc_info and record.exc_info[1] is not None:
            line["exception"] = describe_chain(record.exc_info[1])
            line["traceback"] = _frames(record.exc_info[2])
        return json.dumps(line)

    @staticmethod
    def _message(record: logging.LogRecord) -> str:
        if isinstance(record.args, tuple) and any(
            isinstance(a, BaseException) for a in record.args
        ):
            record = logging.makeLogRecord(
                {**record.__dict__, "args": tuple(_safe_arg(a) for a in record.args)}
            )
        return record.getMessage()


def configure(service: str, level: str = "INFO") -> None:
    """Route every logger to one JSON handler on stderr (the supervisor's log file)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # A crash's traceback, too, goes through the formatter (class and frames, no message).
    sys.excepthook = lambda kind, exc, tb: logging.getLogger("uncaught").critical(
        "uncaught exception", exc_info=(kind, exc, tb)
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
