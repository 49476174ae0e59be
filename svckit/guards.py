"""What the embedded database still needs said differently from MongoDB, in one place.

Nothing here is about correctness any more: the patched FerretDB (stack/ferretdb/patches)
makes single-document writes atomic and hands PostgreSQL `_id` equality, `$ne`, ranges and
`$in`, so the services' guarded writes and reads are plain MongoDB calls (svckit.store).
Left: a capability FerretDB 1.24 lacks (partial indexes) and a limit on its commands.
"""

from __future__ import annotations

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
