"""One writing process per service database where the database needs it (FerretDB).

Why: FerretDB does not isolate concurrent updates of a document; what keeps two writers of one
document from undoing each other is svckit.doclocks, and those locks only hold inside one
process. A second instance of a service on the same FerretDB database (a second `make run`, a
stray process on another port) would silently break that. So on FerretDB a service takes a
lease document in its own database at start and renews it; another instance that finds a live
lease refuses to start with a clear message. On MongoDB, whose single-document writes are
atomic, any number of replicas may run and no lease is taken.

A lease left by a process that died is taken over at once when its holder was on this host
and its pid is gone (the supervisor restarts a killed service immediately); otherwise it
expires after LEASE_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from svckit import guards

log = logging.getLogger(__name__)

COLLECTION = "_storefront_writer"
LEASE_SECONDS = 15.0
RENEW_SECONDS = 5.0


class SecondWriter(RuntimeError):
    """Another live process of this service writes the same (FerretDB) database."""


def pid_alive(pid: int) -> bool:
    """Is a process with this pid alive on this host (a zombie counts as dead)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True  # no /proc: kill(0) said it exists
    return state not in ("Z", "X")


class WriterLease:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], service: str) -> None:
        self._coll = db[COLLECTION]
        self._service = service
        self._id = f"writer:{service}"  # per service: tests may share one database
        self._me = {"holder": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self._task: asyncio.Task[None] | None = None
        self.held = False

    def _stale(self, lease: dict[str, Any], now: datetime) -> bool:
        until = lease.get("until")
        if isinstance(until, datetime):
            until = until if until.tzinfo else until.replace(tzinfo=UTC)
            if until <= now:
                return True
        same_host = lease.get("host") == self._me["host"]
        return same_host and isinstance(lease.get("pid"), int) and not pid_alive(lease["pid"])

    async def acquire(self) -> None:
        """Take the lease (FerretDB only) or raise SecondWriter naming the other process."""
        if not await guards.is_ferretdb(self._coll):
            return
        now = datetime.now(UTC)
        mine = {
            **self._me,
            "service": self._service,
            "until": now + timedelta(seconds=LEASE_SECONDS),
        }
        try:
            await self._coll.insert_one({"_id": self._id, **mine})
        except DuplicateKeyError:
            lease = await self._coll.find_one({"_id": self._id}) or {}
            if not self._stale(lease, now):
                raise SecondWriter(
                    f"another {self._service} process (pid {lease.get('pid')} on "
                    f"{lease.get('host')}) already writes database {self._coll.database.name}; "
                    "FerretDB does not isolate concurrent updates, so only one process per "
                    "service may write it (docs/consistency.md). Stop that one first."
                ) from None
            await self._coll.update_one(
                {"_id": self._id, "holder": lease.get("holder")}, {"$set": mine}
            )
        # FerretDB's updates are not isolated: confirm we are the holder after the write.
        await asyncio.sleep(0.05)
        lease = await self._coll.find_one({"_id": self._id}) or {}
        if lease.get("holder") != self._me["holder"]:
            raise SecondWriter(f"another {self._service} process took the write lease first")
        self.held = True
        self._task = asyncio.create_task(self._renew(), name=f"writer-lease-{self._service}")

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            until = datetime.now(UTC) + timedelta(seconds=LEASE_SECONDS)
            try:
                result = await self._coll.update_one(
                    {"_id": self._id, "holder": self._me["holder"]}, {"$set": {"until": until}}
                )
            except Exception:  # noqa: BLE001 - the database is away: keep trying, keep serving
                log.warning("renewing the write lease failed; retrying")
                continue
            if result.matched_count == 0:
                log.error("the write lease of %s was taken over; stopping", self._service)
                signal.raise_signal(signal.SIGTERM)
                return

    async def release(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.held:
            with contextlib.suppress(Exception):
                await self._coll.delete_one({"_id": self._id, "holder": self._me["holder"]})
            self.held = False
