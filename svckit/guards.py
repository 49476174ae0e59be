"""Conditional writes and reads by `_id`, the same on MongoDB and on FerretDB.

A guarded write is one `update_one({"_id": id, **condition})`: on MongoDB an atomic,
index-backed write that holds across processes; on FerretDB 1.24 (PostgreSQL backend) the
`_id` equality is handed to PostgreSQL (answered by the stack's GIN index, stack/postgres.py)
and the rest of the condition is tested on that one document. FerretDB does not isolate
concurrent updates of a document, so callers hold the document's lock (svckit.doclocks): that
is what makes the guard hold there, within the one process per service the stack runs.

(On the SQLite backend this used to be "read by `_id`, test here, write by `_id`": SQLite got
no filter but a bare `_id` pushed down. On PostgreSQL the extra read only cost a round trip.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

Document = dict[str, Any]

_FERRETDB: dict[int, bool] = {}


async def is_ferretdb(collection: AsyncCollection[Any]) -> bool:
    """Does this collection's server identify itself as FerretDB (`buildInfo.ferretdbVersion`)?"""
    client = collection.database.client
    key = id(client)
    if key not in _FERRETDB:
        info = await client.admin.command("buildInfo")
        _FERRETDB[key] = "ferretdbVersion" in info or "ferretdb" in info
    return _FERRETDB[key]


async def create_partial_index(
    collection: AsyncCollection[Any], key: str, partial: Document, **options: Any
) -> bool:
    """A partial index where the server has them; FerretDB 1.24 has none (it refuses
    `partialFilterExpression`), so there it is skipped. True if created."""
    if await is_ferretdb(collection):
        return False
    await collection.create_index(key, partialFilterExpression=partial, **options)
    return True


_MISSING = object()


def _compare(op: str, have: Any, want: Any) -> bool:
    if op == "$eq":
        return have is not _MISSING and have == want
    if op == "$ne":
        return have is _MISSING or have != want
    if have is _MISSING or have is None:
        return False
    try:
        if op == "$lt":
            return bool(have < want)
        if op == "$lte":
            return bool(have <= want)
        if op == "$gt":
            return bool(have > want)
        if op == "$gte":
            return bool(have >= want)
    except TypeError:
        return False
    raise ValueError(f"unsupported operator {op!r}")


def matches(doc: Document, condition: Document) -> bool:
    """MongoDB's verdict on `condition` for top-level fields with $eq/$ne/$lt/$lte/$gt/$gte."""
    for name, want in condition.items():
        have = doc.get(name, _MISSING)
        if isinstance(want, dict) and want and all(k.startswith("$") for k in want):
            if not all(_compare(op, have, value) for op, value in want.items()):
                return False
        elif not _compare("$eq", have, want):
            return False
    return True


async def find_by_id(
    collection: AsyncCollection[Any],
    doc_id: Any,
    condition: Document | None = None,
    projection: Document | None = None,
) -> Document | None:
    """find_one({"_id": doc_id, **condition}) as an `_id`-only query, the rest tested here."""
    doc = await collection.find_one({"_id": doc_id}, projection)
    if doc is None or (condition and not matches(doc, condition)):
        return None
    return doc


async def find_by_ids(
    collection: AsyncCollection[Any], ids: list[Any], projection: Document | None = None
) -> list[Document]:
    """The documents with these ids that exist. FerretDB hands PostgreSQL no `$in` (it would
    read the whole collection), so there it is one `_id` lookup each, concurrently."""
    if await is_ferretdb(collection):
        found = await asyncio.gather(*(collection.find_one({"_id": i}, projection) for i in ids))
        return [d for d in found if d is not None]
    return [d async for d in collection.find({"_id": {"$in": ids}}, projection)]


async def update_one_if(
    collection: AsyncCollection[Any],
    doc_id: Any,
    condition: Document,
    update: Document,
    *,
    upsert: bool = False,
) -> bool:
    """update_one({"_id": doc_id, **condition}, update); True if a document matched or was
    inserted. An upsert whose guard fails on an existing document raises DuplicateKeyError
    (its insert collides on `_id`). Hold the document's lock around this call."""
    result = await collection.update_one({"_id": doc_id, **condition}, update, upsert=upsert)
    return result.matched_count == 1 or result.upserted_id is not None


# FerretDB v1 keeps each statement's query open until the whole `update` command returns
# (handler/msg_update.go defers every iterator's Close inside its loop), and each open query
# holds one of its backend connections (PostgreSQL: stack.postgres.FERRETDB_POOL). One large
# bulk_write can therefore take them all and then wait forever for one more: the database hangs
# for every client (seen under bench/ on SQLite's pool of 100). Small commands stay far below.
MAX_WRITES_PER_COMMAND = 20


async def bulk_write(collection: AsyncCollection[Any], ops: list[Any]) -> None:
    """Unordered bulk_write in commands of at most MAX_WRITES_PER_COMMAND statements.

    Raises one BulkWriteError for the whole list (indexes into `ops`) if any statement failed;
    the other statements are applied, as with ordered=False."""
    errors: list[Document] = []
    for start in range(0, len(ops), MAX_WRITES_PER_COMMAND):
        try:
            await collection.bulk_write(ops[start : start + MAX_WRITES_PER_COMMAND], ordered=False)
        except BulkWriteError as exc:
            for error in exc.details.get("writeErrors", []):
                errors.append({**error, "index": error["index"] + start})
    if errors:
        raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": []})
