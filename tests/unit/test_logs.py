"""JSON log lines carry the RPC, the event id and the trace id of whatever they were
logged under, so one grep joins a request, the events it caused and its trace."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from pymongo.errors import OperationFailure

from svckit import logs
from svckit.errors import Aborted


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("orders"))
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_line_is_json_with_rpc_event_and_trace_of_the_active_span(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    tracer = TracerProvider().get_tracer("test")  # a private provider: no global state
    rpc = logs.current_rpc.set("storefront.orders.v1.OrdersService/ApproveOrder")
    event = logs.current_event.set("e-123")
    try:
        with tracer.start_as_current_span("apply") as span:
            logger.info("approved %s", "o-1")
            context = span.get_span_context()
    finally:
        logs.current_event.reset(event)
        logs.current_rpc.reset(rpc)
    [line] = lines(stream)
    assert line["message"] == "approved o-1"
    assert line["service"] == "orders"
    assert line["level"] == "INFO"
    assert line["rpc"] == "storefront.orders.v1.OrdersService/ApproveOrder"
    assert line["event_id"] == "e-123"
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")


def test_outside_any_span_or_rpc_the_fields_are_empty_not_missing(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.warning("idle")
    [line] = lines(stream)
    assert (line["rpc"], line["event_id"], line["trace_id"], line["span_id"]) == ("", "", "", "")


def test_a_known_trace_id_is_used_outside_a_span(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    token = logs.current_trace.set("4bf92f3577b34da6a3ce929d0e0e4736")
    try:
        logger.info("from a script")
    finally:
        logs.current_trace.reset(token)
    assert lines(stream)[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_exceptions_stay_inside_the_one_json_line(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    [line] = lines(stream)
    assert line["exception"] == "ValueError"
    assert 'raise ValueError("boom")' in str(line["traceback"])  # where, not what


def test_an_exception_is_logged_as_class_and_code_never_its_message(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """pymongo's messages quote the refused document: logged either way, none of it shows."""
    logger, stream = captured
    doc = {"name": "Ada Lovelace", "email": "ada@example.com", "number": "4111111111111111"}
    refused = OperationFailure(f"document failed validation, full error: {doc}", code=121)
    try:
        try:
            raise KeyError("ada@example.com")
        except KeyError as inner:
            raise refused from inner
    except OperationFailure as exc:
        logger.exception("write failed")
        logger.warning("write failed: %s (%r)", exc, exc)
    out = stream.getvalue()
    for secret in ("Ada", "ada@example.com", "4111111111111111", "validation"):
        assert secret not in out
    first, second = lines(stream)
    assert first["exception"] == "OperationFailure code=121 <- KeyError"
    assert second["message"] == "write failed: OperationFailure code=121 ('OperationFailure code=121')"


def test_describe_names_grpc_and_domain_codes() -> None:
    assert logs.describe(Aborted("customer c-1 changed")) == "Aborted code=ABORTED reason=CONCURRENT_MODIFICATION"
    assert logs.describe(OperationFailure("x", code=11000)) == "OperationFailure code=11000"


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        ("mongodb://app:s3cr%40t@db-0:27017/?tls=true", "mongodb://app:***@db-0:27017/?tls=true"),
        (
            "mongodb+srv://app:pw@cluster0.example.net/accounts",
            "mongodb+srv://app:***@cluster0.example.net/accounts",
        ),
        ("mongodb://127.0.0.1:27017/", "mongodb://127.0.0.1:27017/"),
        ("mongodb://onlyuser@h/", "mongodb://onlyuser@h/"),
        (
            "mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:abc",
            "mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=***",
        ),
        ("failed on mongodb://u:p@h:1/ (timeout)", "failed on mongodb://u:***@h:1/ (timeout)"),
    ],
)
def test_uris_are_shown_without_their_passwords(shown: str, expected: str) -> None:
    assert logs.redacted(shown) == expected
