"""The patched FerretDB loads its registry of databases whole, or not at all (patch 0004).

FerretDB reads every database's metadata once, on the first authenticated use. Unpatched, a
failure halfway (PostgreSQL killed or restarting under it) left a registry missing the
databases after the failure point, which the next call used: their documents read as empty
and their next write failed with 42P07 for as long as the process lived. Seen by the scale
fault suite after a PostgreSQL SIGKILL.

Reproduced without killing anything: a schema holding a metadata table whose row FerretDB
cannot read makes the load fail at that database, every time, until it is gone. A fresh
FerretDB on the same PostgreSQL (its registry not loaded yet) must then refuse every call, and
serve everything once the broken schema is dropped.

These test the embedded stack itself, so they skip when MONGODB_URI points elsewhere.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from stack.embedded import EmbeddedStack, free_ports

pytestmark = pytest.mark.integration

FRESH = "ferretdb-fresh-registry"


def _client(uri: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(uri, serverSelectionTimeoutMS=10_000)


def test_a_registry_that_cannot_be_read_whole_is_not_used_half(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    if stack.external_mongodb:
        pytest.skip("MONGODB_URI is external: the embedded FerretDB is not in use")
    broken = f"{mongo_db_name}_unreadable"
    victims = [f"{mongo_db_name}_v{i}" for i in range(3)]
    with _client(stack.mongodb_uri) as client:
        for name in victims:
            client[name]["things"].insert_many([{"_id": i} for i in range(5)])
    # made after the victims and before them alike: whatever order PostgreSQL lists schemas
    # in, the load fails at this one
    stack.postgres.psql(
        "ferretdb",
        f'CREATE SCHEMA "{broken}"; '
        f'CREATE TABLE "{broken}"._ferretdb_database_metadata (_jsonb jsonb); '
        f'INSERT INTO "{broken}"._ferretdb_database_metadata VALUES (\'"not a collection"\');'
        f'GRANT USAGE ON SCHEMA "{broken}" TO PUBLIC; '
        f'GRANT SELECT ON "{broken}"._ferretdb_database_metadata TO PUBLIC;',
    )
    uri = stack.start_ferretdb_twin(FRESH, free_ports(1)[0])
    try:
        with _client(uri) as fresh:
            for _ in range(3):  # unpatched, the first call fails and the next ones use half
                for name in victims:
                    with pytest.raises(OperationFailure, match="initCollections"):
                        fresh[name]["things"].count_documents({})
            stack.postgres.psql("ferretdb", f'DROP SCHEMA "{broken}" CASCADE;')
            for name in victims:
                assert fresh[name]["things"].count_documents({}) == 5, name
                fresh[name]["things"].insert_one({"_id": 5})  # no "create" of a known database
                assert fresh[name]["things"].count_documents({}) == 6, name
    finally:
        stack.supervisor.stop(FRESH)
        stack.postgres.psql("ferretdb", f'DROP SCHEMA IF EXISTS "{broken}" CASCADE;')
        with _client(stack.mongodb_uri) as client:
            for name in victims:
                client.drop_database(name)
