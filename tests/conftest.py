"""Project-wide pytest fixtures: one embedded stack per session, one MongoDB database per test.

The stack runs on free ports in a temporary run dir, so it never clashes with a stack started by
``python -m stack up`` (``make up``). ``MONGODB_URI`` / ``KAFKA_BOOTSTRAP_SERVERS`` in the
environment make it use external servers instead (see ``stack.embedded``). More specific
fixtures belong in the conftest.py of each test folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase

import topology
from stack import cardkeys
from stack.embedded import EmbeddedStack, Ports
from storefront_cli import system
from storefront_cli.clients import Clients
from tests import leaks
from tests.support import System, load_catalog


@pytest.fixture(scope="session")
def stack() -> Iterator[EmbeddedStack]:
    """Kafka + FerretDB (or the external ones), started once per session and stopped at the end.

    ``stack.stop()`` also stops any process other fixtures registered with
    ``stack.supervisor`` (services, Envoy), so nothing outlives the session.

    The run dir is a private ``mkdtemp`` rather than pytest's ``tmp_path_factory``: pytest
    deletes all but its 3 newest base temp dirs, so with several sessions running at once the
    supervisor's pid records would vanish mid-session and leave servers orphaned. It is
    removed at the end unless ``STACK_KEEP_RUN_DIR=1`` (to read the logs).
    """
    run_dir = Path(tempfile.mkdtemp(prefix="storefront-stack-"))
    st = EmbeddedStack(run_dir, Ports.free())
    # In-process services (accounts_svc.main.build) read their card keys from the
    # environment, as in production; these are the run dir's local ones.
    os.environ.update(cardkeys.env_for(run_dir))
    found: list[str] = []
    try:
        st.start()
        yield st
        # After every suite of the session ran (services stopped, logs complete): no line of
        # any log and no DLQ header holds the test data's names, e-mails or card digits.
        found = leaks.stack_leaks(st)
    finally:
        st.stop()
        if os.environ.get("STACK_KEEP_RUN_DIR") != "1" and not found:
            shutil.rmtree(run_dir, ignore_errors=True)
    assert not found, f"personal or card data in {run_dir}:\n" + "\n".join(found[:20])


@pytest.fixture
def mongo_db_name(stack: EmbeddedStack) -> Iterator[str]:
    """A fresh, unique database name for one test; the database is dropped afterwards.

    Unique names keep tests independent even on a shared external MongoDB.
    """
    name = f"test_{uuid.uuid4().hex[:16]}"
    yield name
    client: MongoClient[dict[str, Any]]
    with MongoClient(stack.mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        client.drop_database(name)


@pytest.fixture
async def mongo_db(
    stack: EmbeddedStack, mongo_db_name: str
) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    """An ``AsyncDatabase`` on :func:`mongo_db_name` (dropped after the test)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        stack.mongodb_uri, serverSelectionTimeoutMS=10_000
    )
    try:
        yield client[mongo_db_name]
    finally:
        await client.close()


@pytest.fixture(scope="session")
def running_system(stack: EmbeddedStack) -> Iterator[System]:
    """The services as real processes (as `storefront run` starts them) and Envoy, on
    free ports, once per session; shared by the e2e and fuzz suites."""
    ports = system.SystemPorts.free()
    prefix = f"e2e{uuid.uuid4().hex[:8]}_"
    system.start_services(stack, ports, db_prefix=prefix, log=lambda _: None)
    system.start_envoy(stack, ports, concurrency=1)
    running = System(stack, ports, prefix)
    load_catalog(running)
    yield running
    for name in ("envoy", *topology.SYSTEM.names):
        stack.supervisor.stop(name)


@pytest.fixture
async def clients(running_system: System) -> AsyncIterator[Clients]:
    c = running_system.connect()
    yield c
    await c.close()
