"""An update command of several statements replies as MongoDB does when one of them fails:
the failure at its statement's index, the statements after it run unless the command is
ordered, and the counts of what ran in the reply (stack/ferretdb/patches 0013; FerretDB 1.24.2
stopped at the first failure, reported it at index 0 and left the counts out). It holds on any
MongoDB, which is the point."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import MongoClient, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from stack.embedded import EmbeddedStack

pytestmark = pytest.mark.integration

DUPLICATE_KEY = 11000


def forward(doc_id: int, version: int) -> UpdateOne:
    """A write that lands only over an older version: refused with a duplicate key where the
    stored one is as new or newer (the upsert's insert collides with it)."""
    return UpdateOne({"_id": doc_id, "v": {"$lt": version}}, {"$set": {"v": version}}, upsert=True)


def failed(
    ops: list[UpdateOne], coll: Collection[dict[str, Any]], *, ordered: bool
) -> dict[str, Any]:
    with pytest.raises(BulkWriteError) as raised:
        coll.bulk_write(ops, ordered=ordered)
    return dict(raised.value.details)


def test_an_update_goes_past_a_failed_statement_unless_ordered(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(stack.mongodb_uri)
    with client:
        coll = client[mongo_db_name]["docs"]
        coll.insert_many([{"_id": 1, "v": 5}, {"_id": 2, "v": 1}])

        ops = [forward(1, 5), forward(2, 2), forward(3, 1), forward(1, 4), forward(2, 3)]
        details = failed(ops, coll, ordered=False)
        assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [
            (0, DUPLICATE_KEY),
            (3, DUPLICATE_KEY),
        ]
        assert (details["nMatched"], details["nModified"], details["nUpserted"]) == (2, 2, 1)
        assert details["upserted"] == [{"index": 2, "_id": 3}]
        assert {d["_id"]: d["v"] for d in coll.find()} == {1: 5, 2: 3, 3: 1}

        details = failed([forward(2, 4), forward(1, 2), forward(3, 2)], coll, ordered=True)
        assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, DUPLICATE_KEY)]
        assert (details["nMatched"], details["nModified"], details["nUpserted"]) == (1, 1, 0)
        assert {d["_id"]: d["v"] for d in coll.find()} == {1: 5, 2: 4, 3: 1}
