"""Structured JSON logs: one object per line with the service, the RPC, the
event id and the trace id of whatever the line was logged under.

Why: the interceptor sets `current_rpc`, the consumer sets `current_event`, and
the trace id comes from the active OpenTelemetry span, so any line, from any
module, can be joined to its request, its event and its trace without the
caller passing them around. `current_trace` is only a fallback for code that
knows a trace id but runs outside a span.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

from svckit import tracing

current_rpc: contextvars.ContextVar[str] = contextvars.ContextVar("rpc", default="")
current_event: contextvars.ContextVar[str] = contextvars.ContextVar("event_id", default="")
current_trace: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")


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
            "message": record.getMessage(),
            "rpc": current_rpc.get(),
            "event_id": current_event.get(),
            "trace_id": trace_id or current_trace.get(),
            "span_id": span_id,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure(service: str, level: str = "INFO") -> None:
    """Route every logger to one JSON handler on stderr (the supervisor's log file)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
