"""Domain errors and their one mapping to gRPC status with google.rpc details.

Domain code raises these; the server interceptor turns them into statuses, so
no handler or servicer builds a status by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "storefront.example"


MAX_TEXT = 300


def bounded(text: str) -> str:
    """Messages quote ids from the request; an 8 KB id would push the status past
    gRPC's 16 KB trailer limit and the client would see RESOURCE_EXHAUSTED instead."""
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


class DomainError(Exception):
    """Base of every error a client can be told about."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str = "UNKNOWN"

    def __init__(self, message: str) -> None:
        message = bounded(message)
        super().__init__(message)
        self.message = message

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN)
        packed = any_pb2.Any()
        packed.Pack(info)
        return [packed]

    def to_status(self) -> status_pb2.Status:
        return status_pb2.Status(
            code=self.code.value[0], message=self.message, details=self.details()
        )


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation]) -> None:
        fields = ", ".join(v.field for v in violations)
        super().__init__(f"invalid request: {fields}")
        self.violations = violations

    def details(self) -> list[any_pb2.Any]:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in self.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        return [packed, *super().details()]


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        *,
        subject: str = "",
        type_: str = "STATE",
        more: Sequence[FieldViolation] = (),
    ) -> None:
        """`more`: further failed preconditions, each naming its own subject (e.g. the lines
        of a request that name what cannot be used)."""
        super().__init__(message)
        self.subject = bounded(subject)
        self.type_ = type_
        self.more = list(more)

    def details(self) -> list[any_pb2.Any]:
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=self.type_, subject=subject, description=description
                )
                for subject, description in [
                    (self.subject, self.message),
                    *((bounded(m.field), bounded(m.description)) for m in self.more),
                ]
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(failure)
        return [packed, *super().details()]


class ResourceExhausted(DomainError):
    """A per-principal quota is used up: the caller may try again once it has room (e.g. an
    order closed), which is why this is not INVALID_ARGUMENT."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "QUOTA_EXCEEDED"

    def __init__(self, message: str, *, subject: str) -> None:
        super().__init__(message)
        self.subject = bounded(subject)

    def details(self) -> list[any_pb2.Any]:
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=self.subject, description=self.message
                )
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(quota)
        return [packed, *super().details()]


class Unauthenticated(DomainError):
    """No usable credentials: missing, malformed, expired or badly signed token."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """The caller is known, and the policy does not let them make this call."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Aborted(DomainError):
    """Optimistic concurrency: the caller's view is stale; re-read and retry."""

    code = grpc.StatusCode.ABORTED
    reason = "CONCURRENT_MODIFICATION"


class Unavailable(DomainError):
    """Try again later: e.g. the aggregate's events wait for Kafka and its outbox is full."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "BACKPRESSURE"


@dataclass
class Violations:
    """Collects field violations so a request is rejected once, with all of them."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append(FieldViolation(field_path, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


def require(value: str, field_path: str) -> None:
    """INVALID_ARGUMENT naming `field_path` when a required string is empty."""
    v = Violations()
    if not value:
        v.add(field_path, "is required")
    v.raise_if_any()
