"""Per-document locks shared by every writer of a collection within a process.

Why: FerretDB v1 applies an update by reading the document, changing it and
writing it back with no isolation, so two concurrent updates of one document
can both "succeed" and one is lost (measured on the embedded stack: 87 of 200
relay $pulls undid a concurrent handler update). MongoDB itself makes each
single-document update atomic and this lock then costs next to nothing. With
FerretDB the guarantee holds for one process per service, which is how the
embedded stack runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection


class DocumentLocks:
    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._users: dict[Hashable, int] = {}

    @asynccontextmanager
    async def hold(self, *ids: Hashable) -> AsyncIterator[None]:
        keys = sorted(set(ids), key=repr)  # one acquisition order for every caller: no deadlock
        for key in keys:
            self._users[key] = self._users.get(key, 0) + 1
        locks = [self._locks.setdefault(key, asyncio.Lock()) for key in keys]
        held: list[asyncio.Lock] = []
        try:
            for lock in locks:
                await lock.acquire()
                held.append(lock)
            yield
        finally:
            for lock in reversed(held):
                lock.release()
            for key in keys:
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key], self._locks[key]


_BY_COLLECTION: dict[str, DocumentLocks] = {}


def for_collection(collection: AsyncCollection[Any]) -> DocumentLocks:
    return _BY_COLLECTION.setdefault(collection.full_name, DocumentLocks())
