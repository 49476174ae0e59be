"""Per-document locks shared by the writers of a collection within a process.

No longer what keeps updates from being lost: the patched FerretDB (stack/ferretdb/patches)
makes each single-document write atomic, as MongoDB does, and the use cases rely on version
guards alone (svckit.saving). Only the outbox relay still takes these locks around its bulk
writes; this module goes when it stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection


class DocumentLocks:
    """Re-entrant per task: a task holding a document's lock may take it again."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._users: dict[Hashable, int] = {}
        self._owners: dict[Hashable, asyncio.Task[Any] | None] = {}

    @asynccontextmanager
    async def hold(self, *ids: Hashable) -> AsyncIterator[None]:
        me = asyncio.current_task()
        keys = sorted(set(ids), key=repr)  # one acquisition order for every caller: no deadlock
        keys = [k for k in keys if self._owners.get(k) is not me or me is None]
        for key in keys:
            self._users[key] = self._users.get(key, 0) + 1
        locks = [(key, self._locks.setdefault(key, asyncio.Lock())) for key in keys]
        held: list[tuple[Hashable, asyncio.Lock]] = []
        try:
            for key, lock in locks:
                await lock.acquire()
                self._owners[key] = me
                held.append((key, lock))
            yield
        finally:
            for key, lock in reversed(held):
                self._owners.pop(key, None)
                lock.release()
            for key in keys:
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key], self._locks[key]


_BY_COLLECTION: dict[str, DocumentLocks] = {}


def for_collection(collection: AsyncCollection[Any]) -> DocumentLocks:
    return _BY_COLLECTION.setdefault(collection.full_name, DocumentLocks())
