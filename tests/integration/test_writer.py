"""One writing process per service database on FerretDB (issue 12, finding 8, second half)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from accounts_svc.main import build
from stack.embedded import EmbeddedStack
from svckit import guards
from svckit.writer import COLLECTION, SecondWriter, WriterLease
from tests.support import running, settings_for

pytestmark = pytest.mark.integration


async def test_a_second_instance_on_the_same_database_refuses_to_start(
    stack: EmbeddedStack, mongo_db_name: str
) -> None:
    if stack.external_mongodb:
        pytest.skip("MONGODB_URI is external: MongoDB replicas may share a database")
    settings = settings_for(stack, "accounts", mongo_db_name)
    async with running(build, settings):
        second = build(settings)
        with pytest.raises(SecondWriter, match="already writes database"):
            await second.start()
        await second.mongo.close()
    # Once the first has stopped (and released its lease), a new one starts.
    async with running(build, settings) as again:
        assert again.bound_port


async def test_a_lease_left_by_a_dead_process_on_this_host_is_taken_over(
    stack: EmbeddedStack, mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    if not await guards.is_ferretdb(mongo_db[COLLECTION]):
        pytest.skip("no lease on MongoDB")
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    crashed = WriterLease(mongo_db, "accounts")
    await crashed.acquire()
    assert crashed._task is not None
    crashed._task.cancel()  # it "dies" without releasing: its pid is now a dead one
    await mongo_db[COLLECTION].update_one({"_id": "writer:accounts"}, {"$set": {"pid": dead.pid}})
    successor = WriterLease(mongo_db, "accounts")
    await successor.acquire()
    assert successor.held
    await successor.release()
