"""The one Kafka producer each service shares: outbox relay and DLQ both use it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from svckit.envelope import Headers

log = logging.getLogger(__name__)


async def start_with_retry(
    start: Callable[[], Awaitable[None]], what: str, timeout: float | None
) -> None:
    """Run an aiokafka client's start() until the broker answers, or `timeout` passes."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        try:
            await start()
            return
        except Exception as exc:  # noqa: BLE001 - the broker may still be starting
            if deadline is not None and loop.time() > deadline:
                raise
            log.warning("%s cannot reach kafka yet: %s", what, exc)
            await asyncio.sleep(1.0)


class EventProducer:
    """acks=all with idempotence, so a retried send never duplicates within a session."""

    def __init__(self, bootstrap_servers: str, client_id: str, *, linger_ms: int = 5) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            max_batch_size=256 * 1024,
            request_timeout_ms=15000,
            retry_backoff_ms=200,
        )
        self._started = False

    async def start(self, *, timeout: float | None = 60.0) -> None:
        """Connect, retrying while the broker comes up (None: retry for ever)."""
        await start_with_retry(self._producer.start, "producer", timeout)
        self._started = True

    async def stop(self) -> None:
        if self._started:
            await self._producer.stop()  # flushes pending batches first
            self._started = False

    async def send(
        self, topic: str, key: str, value: bytes, headers: Headers
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record; the returned future resolves when the broker has it."""
        return await self._producer.send(topic, value=value, key=key.encode(), headers=headers)

    async def send_and_wait(self, topic: str, key: str, value: bytes, headers: Headers) -> None:
        await (await self.send(topic, key, value, headers))

    async def healthy(self) -> bool:
        if not self._started:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 3.0)
            return True
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False
