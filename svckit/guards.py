"""Conditional writes by `_id` that stay fast on FerretDB v1.

Why: FerretDB v1 (SQLite backend) pushes a filter down to SQL only when it is exactly
`{"_id": <value>}`; any other filter, even `{"_id": x, "version": 3}`, reads and decodes every
document of the collection (measured with bench/: a find_one by `_id` plus one more condition
ran 4x slower on 1,000 documents, a guarded upsert 15x slower, and both get slower as the
collection grows). MongoDB answers both from the `_id` index.

So on FerretDB a guarded write becomes: read the document by `_id`, test the guard here, write
by `_id`. The caller holds the document's lock (svckit.doclocks), which is also what makes the
guard hold on FerretDB at all, since FerretDB v1 does not isolate concurrent updates. On MongoDB
the guard stays in the filter: one atomic, index-backed write that holds across processes.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

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
    return doc  # type: ignore[no-any-return]


async def update_one_if(
    collection: AsyncCollection[Any],
    doc_id: Any,
    condition: Document,
    update: Document,
    *,
    upsert: bool = False,
) -> bool:
    """update_one({"_id": doc_id, **condition}, update); True if a document matched or was
    inserted. As on MongoDB, an upsert whose guard fails on an existing document raises
    DuplicateKeyError. Hold the document's lock around this call."""
    if not await is_ferretdb(collection):
        result = await collection.update_one({"_id": doc_id, **condition}, update, upsert=upsert)
        return result.matched_count == 1 or result.upserted_id is not None
    projection = {name: 1 for name in condition} or {"_id": 1}
    doc = await collection.find_one({"_id": doc_id}, projection)
    if doc is None:
        if not upsert:
            return False
        result = await collection.update_one({"_id": doc_id}, update, upsert=True)
        return True
    if not matches(doc, condition):
        if upsert:
            raise DuplicateKeyError(f"E11000 duplicate key error: _id {doc_id!r} (guard failed)")
        return False
    result = await collection.update_one({"_id": doc_id}, update)
    return result.matched_count == 1


# FerretDB v1 keeps each statement's query open until the whole `update` command returns
# (handler/msg_update.go defers every iterator's Close inside its loop), and each open query
# holds one of the database's 100 SQLite connections. One bulk_write of ~100 updates therefore
# takes them all and then waits forever for one more: the database hangs for every client
# (seen twice under bench/ before this limit). Small commands keep far below the pool.
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
