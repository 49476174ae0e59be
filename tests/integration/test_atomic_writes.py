"""Single-document writes are atomic, as on MongoDB: processes racing on the same documents.

Each test starts 8 processes (one MongoClient each, so FerretDB serves them on separate
connections and PostgreSQL backends), released together by a barrier, and counts the writes
the server acknowledged. On FerretDB 1.24.2 without stack/ferretdb/patches, the read-apply-write
of an update is not atomic: several processes "win" the same version and $inc are lost. They
hold on a real MongoDB (MONGODB_URI) too, which is the point: same queries, same guarantees.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from threading import Barrier
from typing import Any

import pytest
from pymongo import MongoClient

from stack.embedded import EmbeddedStack

pytestmark = pytest.mark.integration

PROCESSES = 8
DOCS = 20
VERSIONS = 5
INCS = 500


def _client(uri: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(uri, serverSelectionTimeoutMS=10_000)


def _guarded_updates(barrier: Barrier, uri: str, db: str, use_find_and_modify: bool) -> list[str]:
    """Tries every version step of every document; returns the steps this process won."""
    won: list[str] = []
    with _client(uri) as client:
        col = client[db]["docs"]
        barrier.wait()
        for version in range(VERSIONS):
            for i in range(DOCS):
                guard = {"_id": i, "v": version}
                step = {"$set": {"v": version + 1}}
                if use_find_and_modify:
                    hit = col.find_one_and_update(guard, step) is not None
                else:
                    hit = col.update_one(guard, step).modified_count == 1
                if hit:
                    won.append(f"{i}/{version}")
    return won


def _incs(barrier: Barrier, uri: str, db: str) -> int:
    with _client(uri) as client:
        col = client[db]["counters"]
        barrier.wait()
        for _ in range(INCS):
            col.update_one({"_id": "c"}, {"$inc": {"n": 1}})
    return INCS


def _update_or_delete(barrier: Barrier, uri: str, db: str, delete: bool) -> tuple[bool, list[int]]:
    """Either moves each document from v=0 to v=1 or deletes it while it is at v=0."""
    won: list[int] = []
    with _client(uri) as client:
        col = client[db]["docs"]
        barrier.wait()
        for i in range(DOCS):
            guard = {"_id": i, "v": 0}
            if delete:
                hit = col.delete_one(guard).deleted_count == 1
            else:
                hit = col.update_one(guard, {"$set": {"v": 1}}).modified_count == 1
            if hit:
                won.append(i)
    return delete, won


def _race(target: Any, *args: Any, split: bool = False) -> list[Any]:
    """Runs target in PROCESSES processes at once; with split, odd ones get True as last arg."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(PROCESSES, mp_context=ctx) as pool:
        barrier = manager.Barrier(PROCESSES, timeout=120)
        jobs = [
            pool.submit(target, barrier, *args, *((p % 2 == 1,) if split else ()))
            for p in range(PROCESSES)
        ]
        return [job.result(timeout=600) for job in jobs]


def _seed(stack: EmbeddedStack, db: str) -> None:
    with _client(stack.mongodb_uri) as client:
        client[db]["docs"].insert_many([{"_id": i, "v": 0} for i in range(DOCS)])
        client[db]["counters"].insert_one({"_id": "c", "n": 0})


@pytest.mark.parametrize("use_find_and_modify", [False, True], ids=["update", "findAndModify"])
def test_version_guarded_updates_have_exactly_one_winner_per_version(
    stack: EmbeddedStack, mongo_db_name: str, use_find_and_modify: bool
) -> None:
    _seed(stack, mongo_db_name)
    results = _race(_guarded_updates, stack.mongodb_uri, mongo_db_name, use_find_and_modify)
    wins = Counter(step for won in results for step in won)
    doubles = {step: n for step, n in wins.items() if n > 1}
    assert not doubles, f"{len(doubles)} version steps won by several writers: {doubles}"
    assert len(wins) == DOCS * VERSIONS
    with _client(stack.mongodb_uri) as client:
        assert {d["v"] for d in client[mongo_db_name]["docs"].find()} == {VERSIONS}


def test_racing_incs_lose_nothing(stack: EmbeddedStack, mongo_db_name: str) -> None:
    _seed(stack, mongo_db_name)
    done = sum(_race(_incs, stack.mongodb_uri, mongo_db_name))
    with _client(stack.mongodb_uri) as client:
        counter = client[mongo_db_name]["counters"].find_one({"_id": "c"})
    assert counter is not None
    assert counter["n"] == done == PROCESSES * INCS


def test_a_document_is_either_updated_or_deleted_never_both(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    _seed(stack, mongo_db_name)
    results = _race(_update_or_delete, stack.mongodb_uri, mongo_db_name, split=True)
    wins = Counter(i for _, won in results for i in won)
    assert {i: n for i, n in wins.items() if n != 1} == {}
    deleted = {i for delete, won in results if delete for i in won}
    with _client(stack.mongodb_uri) as client:
        left = {d["_id"]: d["v"] for d in client[mongo_db_name]["docs"].find()}
    assert left == {i: 1 for i in range(DOCS) if i not in deleted}
