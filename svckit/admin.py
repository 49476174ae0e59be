"""The internal admin service (storefront.admin.v1.AdminService) every service serves.

Repairs, replays and DLQ replays are use cases of the service that owns the documents, so
only the service writes them, through the same save step and version guards as its other use
cases (svckit.saving). A service gives
`ServiceApp.admin` its handlers (an `Owner`, and a `Consumer` if it consumes); this module
turns them into the RPCs. Envoy and the ingress route only the public services; the policy
grants these RPCs to staff only.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import bson
import grpc
from google.protobuf import struct_pb2
from pymongo.asynchronous.collection import AsyncCollection

from storefront.admin.v1 import admin_pb2, admin_pb2_grpc
from svckit import dlq, names, paging
from svckit.checks import Summary
from svckit.consumer import EventHandler
from svckit.errors import FailedPrecondition, NotFound, Violations
from svckit.kafka import KafkaConnection
from svckit.outbox import OUTBOX, PARKED, PARKED_MARK, PENDING
from svckit.replay import missing_history, replay_topic
from svckit.saving import Lost, until_saved

log = logging.getLogger(__name__)

Document = dict[str, Any]
SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
MAX_IDS = 1000
MAX_CHANGED_LISTED = 100


class Verdict(enum.Enum):
    """What republishing one aggregate did."""

    QUEUED = "queued"
    NOTHING_TO_PUBLISH = "nothing_to_publish"
    NOT_FOUND = "not_found"


@dataclass
class Republished:
    """What a republish did, per id."""

    queued: list[str] = field(default_factory=list)
    nothing_to_publish: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)

    def add(self, aggregate_id: str, verdict: Verdict) -> None:
        getattr(self, verdict.value).append(aggregate_id)


async def republish_each(
    ids: Sequence[str],
    decide: Callable[[str], Awaitable[Verdict | Lost]],
    notify: Callable[[str], None],
) -> Republished:
    """Run a service's republish step (load, decide, guarded write) for each id, through the
    save step of every use case: re-decided if another writer came first (`decide` LOST)."""
    done = Republished()
    for aggregate_id in ids:
        verdict = await until_saved(partial(decide, aggregate_id), what=aggregate_id)
        done.add(aggregate_id, verdict)
        if verdict is Verdict.QUEUED:
            notify(aggregate_id)
    return done


@dataclass(frozen=True)
class ReadModel:
    """What a consumed topic builds here: the collection, and the fields a replay may
    change without the read model being different (bookkeeping, not content)."""

    collection: AsyncCollection[Document]
    bookkeeping: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Summarized:
    """A collection the service answers for (ListSummaries): how one document reads as a
    `Summary`, the service's own business (its domain may say what a document means)."""

    collection: AsyncCollection[Document]
    summarize: Callable[[Document], Summary]


class Owner(Protocol):
    """A service's handlers, as the system of record of their aggregates."""

    async def republish(self, ids: Sequence[str]) -> Republished:
        """Queue the current state of these aggregates in the outbox again."""


class Consumer(Protocol):
    """A consuming service's handlers, as the keepers of what they derive from topics."""

    def event_handlers(self) -> dict[str, EventHandler]:
        """The handler of each event type the service consumes."""

    async def forget(self, topic: str) -> int:
        """Drop what was derived from `topic` (ValueError: the service owns that state)."""


@dataclass(frozen=True)
class Answering:
    """An owner with the collections it answers for, by the topology's collection name:
    what a service gives `ServiceApp.admin` for `storefront check` to read its data."""

    owner: Owner
    summaries: Mapping[str, Summarized]

    async def republish(self, ids: Sequence[str]) -> Republished:
        return await self.owner.republish(ids)


async def digests(model: ReadModel) -> dict[str, bytes]:
    """A digest per document, bookkeeping left out: compares a whole read model before and
    after a replay in memory that does not grow with the documents' size."""
    ignored = {OUTBOX, PENDING, PARKED, PARKED_MARK, *model.bookkeeping}
    projection = dict.fromkeys(ignored, 0)
    return {
        str(doc["_id"]): hashlib.blake2b(bson.encode(doc), digest_size=16).digest()
        async for doc in model.collection.find({}, projection)
    }


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        owner: Owner,
        consumer: Consumer | None = None,
        read_models: Mapping[str, ReadModel] | None = None,
        *,
        kafka: KafkaConnection,
        consumer_group: str,
        service: str,
    ) -> None:
        self.owner = owner
        self.summaries = dict(owner.summaries) if isinstance(owner, Answering) else {}
        self.consumer = consumer
        self.read_models = dict(read_models or {}) if consumer else {}
        self.kafka = kafka
        self.replay_group = names.dlq_replay_group(consumer_group)
        self.dead_letter_group = names.consumer_group(service)
        self.service = service

    def _consumed(self, topic: str) -> tuple[Consumer, ReadModel]:
        v = Violations()
        if not topic:
            v.add("topic", "is required")
        elif topic not in self.read_models:
            known = ", ".join(self.read_models) or "none"
            v.add("topic", f"is not a topic this service consumes (it consumes: {known})")
        v.raise_if_any()
        assert self.consumer is not None  # read models come only with a consumer
        return self.consumer, self.read_models[topic]

    async def Republish(
        self, request: admin_pb2.RepublishRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RepublishResponse:
        v = Violations()
        if not request.ids:
            v.add("ids", "is required")
        if len(request.ids) > MAX_IDS:
            v.add("ids", f"at most {MAX_IDS} per call")
        if any(not i for i in request.ids):
            v.add("ids", "must not contain an empty id")
        v.raise_if_any()
        done = await self.owner.republish(list(dict.fromkeys(request.ids)))
        return admin_pb2.RepublishResponse(
            queued=done.queued, nothing_to_publish=done.nothing_to_publish, not_found=done.not_found
        )

    async def ReplayTopic(
        self, request: admin_pb2.ReplayTopicRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ReplayTopicResponse:
        consumer, model = self._consumed(request.topic)
        if request.rebuild:
            # Forgetting is safe only if the topic still holds every aggregate's history;
            # the state topics keep 7 days (docs/consistency.md).
            gone = await missing_history(self.kafka, request.topic)
            if gone:
                starts = ", ".join(f"partition {p} starts at offset {o}" for p, o in gone.items())
                raise FailedPrecondition(
                    f"cannot rebuild: {request.topic} no longer holds its whole history "
                    f"({starts}); replay without rebuild, or repair from the owner",
                    subject=request.topic,
                )
        before = await digests(model)
        forgotten = 0
        if request.rebuild:
            try:
                forgotten = await consumer.forget(request.topic)
            except ValueError as exc:
                raise FailedPrecondition(f"cannot rebuild: {exc}", subject=request.topic) from exc
        records, outcomes = await replay_topic(
            self.kafka, request.topic, consumer.event_handlers(), log=_log
        )
        after = await digests(model)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        return admin_pb2.ReplayTopicResponse(
            records=records,
            outcomes=dict(outcomes),
            forgotten=forgotten,
            documents=len(after),
            changed=changed[:MAX_CHANGED_LISTED],
            changed_count=len(changed),
        )

    async def ReplayParked(
        self, request: admin_pb2.ReplayParkedRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ReplayParkedResponse:
        consumer, _ = self._consumed(request.topic)
        try:
            results = await dlq.replay_parked(
                self.kafka,
                names.dlq_topic(request.topic, self.dead_letter_group),
                list(request.ids),
                consumer.event_handlers(),
                group=self.replay_group,
            )
        except LookupError as exc:
            raise NotFound(str(exc.args[0])) from exc
        return admin_pb2.ReplayParkedResponse(
            results=[
                admin_pb2.ParkedOutcome(id=r.id, outcome=r.outcome, error=r.error) for r in results
            ]
        )

    async def ListSummaries(
        self, request: admin_pb2.ListSummariesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListSummariesResponse:
        v = Violations()
        if not request.collection:
            v.add("collection", "is required")
        elif request.collection not in self.summaries:
            known = ", ".join(self.summaries) or "none"
            v.add("collection", f"is not one this service answers for (it answers for: {known})")
        v.raise_if_any()
        held = self.summaries[request.collection]
        after = paging.decode_token(request.page_token)
        limit = paging.page_size(request.page_size)
        query = {} if after is None else {"_id": {"$gt": after}}
        budget = paging.PageBudget(limit)
        page: list[admin_pb2.DocumentSummary] = []
        more = False
        cursor = held.collection.find(query, {OUTBOX: 0}).sort("_id", 1).limit(limit + 1)
        async for doc in cursor:
            summary = held.summarize(doc)
            facts = struct_pb2.Struct()
            facts.update(dict(summary.facts))
            item = admin_pb2.DocumentSummary(
                id=summary.id, version=summary.version, digest=summary.digest, facts=facts
            )
            if not budget.take(item):
                more = True
                break
            page.append(item)
        token = paging.encode_token(page[-1].id) if more and page else ""
        return admin_pb2.ListSummariesResponse(summaries=page, next_page_token=token)

    async def MigrateParked(
        self, request: admin_pb2.MigrateParkedRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.MigrateParkedResponse:
        self._consumed(request.topic)
        old = names.legacy_dlq_topic(request.topic)
        new = names.dlq_topic(request.topic, self.dead_letter_group)
        runs = names.run_groups_prefix(self.service)
        done = await dlq.move_parked(
            self.kafka, old, new, lambda g: g == self.dead_letter_group or g.startswith(runs)
        )
        return admin_pb2.MigrateParkedResponse(
            old_dlq=old, dlq=new, moved=done.moved, already=done.already, others=done.others
        )


def _log(line: str) -> None:
    log.info("%s", line)
