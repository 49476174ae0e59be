"""The one way every process of the project opens MongoDB: services, operator tools, benches.

Why a bounded pool: FerretDB stops answering every client, even ``ping``, once more operations
are in flight than its own PostgreSQL pool holds (reproduced in tests/integration/test_mongo.py
with FerretDB's default pool of 50). A pymongo client runs at most ``maxPoolSize`` operations at
once, so capping it here (32, or ``MONGODB_MAX_POOL_SIZE``) and sizing FerretDB's pool above
the sum of the stack's clients (``stack.postgres.FERRETDB_POOL``) keeps the database answering
however many requests queue up. A ``maxPoolSize`` in ``MONGODB_URI`` wins, so a real MongoDB
deployment tunes it in the URI with no code change.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svckit import envvars

if TYPE_CHECKING:  # pymongo is imported by `connect`, so tools that only name a URI skip it
    from pymongo import AsyncMongoClient

MAX_POOL_SIZE = 32
"""The default bound; MONGODB_MAX_POOL_SIZE overrides it."""
SERVER_SELECTION_TIMEOUT_MS = 5000

Document = dict[str, Any]


def connect(
    uri: str, *, timeout_ms: int = SERVER_SELECTION_TIMEOUT_MS
) -> AsyncMongoClient[Document]:
    """An AsyncMongoClient with tz-aware datetimes and the project's pool bound."""
    from pymongo import AsyncMongoClient

    options: dict[str, Any] = {"tz_aware": True, "serverSelectionTimeoutMS": timeout_ms}
    if "maxpoolsize=" not in uri.lower():
        options["maxPoolSize"] = envvars.integer(
            os.environ, "MONGODB_MAX_POOL_SIZE", MAX_POOL_SIZE, minimum=1
        )
    return AsyncMongoClient(uri, **options)


def with_password_file(uri: str, password_file: str | Path) -> str:
    """`uri` with its user's password read from a file (``MONGODB_PASSWORD_FILE``): tools keep
    the password in a private file, never in an env file or on a command line."""
    parts = urllib.parse.urlsplit(uri)
    user, _, host = parts.netloc.rpartition("@")
    if not user:
        raise ValueError("MONGODB_PASSWORD_FILE needs a user in MONGODB_URI")
    password = urllib.parse.quote(Path(password_file).read_text().strip(), safe="")
    name = user.partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{name}:{password}@{host}"))
