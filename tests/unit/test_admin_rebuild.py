"""A rebuild forgets a read model and re-applies its topic: refused when the topic no longer
holds every aggregate's history, before anything is forgotten (svckit.admin)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storefront.admin.v1 import admin_pb2
from svckit import admin
from svckit.errors import FailedPrecondition
from svckit.kafka import KafkaConnection

TOPIC = "accounts.customer.change"


class Forgetful:
    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def event_handlers(self) -> dict[str, Any]:
        return {}

    async def forget(self, topic: str) -> int:
        self.forgotten.append(topic)
        return 1


class NoOwner:
    async def republish(self, ids: Any) -> admin.Republished:
        return admin.Republished()


def servicer(consumer: Forgetful) -> admin.AdminServicer:
    model = admin.ReadModel(collection=None)  # type: ignore[arg-type]
    return admin.AdminServicer(
        NoOwner(),
        consumer,
        {TOPIC: model},
        kafka=KafkaConnection(bootstrap_servers="127.0.0.1:1"),
        consumer_group="orders-svc",
        service="orders",
    )


def test_a_rebuild_of_a_topic_that_lost_records_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def retention_ran(kafka: KafkaConnection, topic: str) -> dict[int, int]:
        return {1: 42}

    monkeypatch.setattr(admin, "missing_history", retention_ran)
    consumer = Forgetful()
    request = admin_pb2.ReplayTopicRequest(topic=TOPIC, rebuild=True)
    with pytest.raises(FailedPrecondition, match="partition 1 starts at offset 42"):
        asyncio.run(servicer(consumer).ReplayTopic(request, None))
    assert consumer.forgotten == []
