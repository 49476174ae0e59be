"""Outage or poison: which failures wait for a dependency and which belong to the event.

Why: an event that fails because the database or the broker is away is not poison. Sending
it to the DLQ after a few retries turns every outage longer than the retries into work for a
person (measured before this: a 45 s database outage parked in-flight events). So the consumer
holds its position and retries a transient failure without limit, and only a failure that
would happen again with every dependency up (a bug, a value the database refuses) goes to the
DLQ after bounded retries.

Transient:
- the driver cannot reach or keep a server (pymongo's ConnectionFailure family: AutoReconnect,
  NetworkTimeout, ServerSelectionTimeoutError), a server-side time limit, a write concern
  timeout, anything MongoDB labels retryable, and MongoDB's "not primary / shutting down /
  write conflict" codes;
- FerretDB's own answer when its PostgreSQL is unreachable or restarting: error code 1 with
  pgx's connection error text (FerretDB has no code of its own for it);
- Kafka errors (aiokafka's KafkaError family: broker away, request timed out, not the leader);
- OS-level network errors and timeouts;
- ABORTED from the project's own save step: other writers kept winning the version race.
"""

from __future__ import annotations

import re

import grpc
from aiokafka.errors import KafkaError
from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from svckit.errors import DomainError

# MongoDB codes for a server that is stepping down, shutting down, or lost a write race.
TRANSIENT_CODES = frozenset({6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 112})
FERRETDB_INTERNAL = 1
# pgx's words for "PostgreSQL is not there (right now)", as FerretDB relays them.
_BACKEND_AWAY = re.compile(
    r"failed to connect|connection refused|conn closed|connection reset|broken pipe"
    r"|unexpected EOF|SQLSTATE 57P0[1-3]|SQLSTATE 08[0-9A-Z]{3}|the database system is"
    r"|closed pool|context deadline exceeded",
    re.IGNORECASE,
)


def is_transient(exc: BaseException) -> bool:
    """True if ``exc`` says a dependency is away (retry for ever), False if the work is bad."""
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError | KafkaError):
        return True
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if isinstance(exc, DomainError) and exc.code == grpc.StatusCode.ABORTED:
        return True
    if isinstance(exc, PyMongoError) and (
        exc.has_error_label("RetryableWriteError")
        or exc.has_error_label("TransientTransactionError")
    ):
        return True
    if isinstance(exc, OperationFailure):
        if exc.code in TRANSIENT_CODES:
            return True
        if exc.code == FERRETDB_INTERNAL and _BACKEND_AWAY.search(str(exc)):
            return True
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_transient(cause)
