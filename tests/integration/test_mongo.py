"""The MongoDB endpoint (FerretDB or external) does what the services rely on.

Collections are literally named with dots (``customer.accounts``), and a unique index must
refuse a duplicate with the normal driver error. The values are not personal data: FerretDB
logs the key of a unique violation (PostgreSQL's error detail), and the session's leak scan
reads that log.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

import topology

pytestmark = pytest.mark.integration


async def test_unique_index_refuses_duplicate(mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
    accounts = mongo_db[topology.CUSTOMERS]
    await accounts.create_index("handle", unique=True, name="handle_unique")

    await accounts.insert_one({"_id": "c-1", "handle": "h-0001", "tier": "gold"})
    await accounts.insert_one({"_id": "c-2", "handle": "h-0002", "tier": "silver"})

    found = await accounts.find_one({"handle": "h-0001"})
    assert found is not None and found["_id"] == "c-1" and found["tier"] == "gold"

    with pytest.raises(DuplicateKeyError):
        await accounts.insert_one({"_id": "c-3", "handle": "h-0001", "tier": "bronze"})

    assert await accounts.count_documents({}) == 2
    info = await accounts.index_information()
    assert info["handle_unique"].get("unique") is True
    assert topology.CUSTOMERS in await mongo_db.list_collection_names()
