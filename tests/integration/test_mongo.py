"""The MongoDB endpoint (FerretDB or external) does what the services rely on.

Accounts keeps customers in a collection literally named ``customer.accounts`` with a unique
index on the e-mail; a duplicate must be refused with the normal driver error.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from svckit import names

pytestmark = pytest.mark.integration


async def test_unique_index_refuses_duplicate(mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
    accounts = mongo_db[names.CUSTOMERS]
    await accounts.create_index("email", unique=True, name="email_unique")

    await accounts.insert_one({"_id": "c-1", "email": "ada@example.com", "name": "Ada"})
    await accounts.insert_one({"_id": "c-2", "email": "bob@example.com", "name": "Bob"})

    found = await accounts.find_one({"email": "ada@example.com"})
    assert found is not None and found["_id"] == "c-1" and found["name"] == "Ada"

    with pytest.raises(DuplicateKeyError):
        await accounts.insert_one({"_id": "c-3", "email": "ada@example.com", "name": "Eve"})

    assert await accounts.count_documents({}) == 2
    info = await accounts.index_information()
    assert info["email_unique"].get("unique") is True
    assert names.CUSTOMERS in await mongo_db.list_collection_names()
