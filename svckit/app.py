"""ServiceApp: what every service's main needs, in one place.

A service's entrypoint creates the app, registers its gRPC servicer, the
collections whose outbox must be relayed and the topics it consumes, then
calls `run()`. The app owns the MongoDB client, the Kafka producer, health,
reflection, metrics and the graceful shutdown order:
stop taking RPCs -> drain RPCs -> stop consumers (commit) -> flush outboxes
-> flush the producer -> close MongoDB.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from storefront.admin.v1 import admin_pb2_grpc
from svckit import admin, logs, metrics, mongo, policy, reflection, tracing
from svckit.auth import TokenVerifier
from svckit.authz import Authorizer, Gatekeeper, OwnerLookup
from svckit.consumer import BatchHandler, EventConsumer, EventHandler
from svckit.interceptors import ServerInterceptor
from svckit.kafka import EventProducer
from svckit.outbox import OutboxRelay
from svckit.settings import ConfigError, Settings

log = logging.getLogger(__name__)

Document = dict[str, Any]

LIVENESS_HEALTH = "liveness"
"""Health name the liveness probe asks: the process answers."""
KAFKA_HEALTH = "kafka"
EVENTS_HEALTH = "events"


def mongo_client(settings: Settings) -> AsyncMongoClient[Document]:
    return mongo.connect(settings.mongodb_uri)


class ServiceApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        tracing.instrument_clients(settings.service_name, settings.tracing)  # before the client
        self.mongo = mongo_client(settings)
        self.db: AsyncDatabase[Document] = self.mongo[settings.mongodb_database]
        self.producer = EventProducer(settings.kafka, settings.service_name)
        self._services: list[tuple[Callable[[Any, grpc.aio.Server], None], Any, str]] = []
        self._relays: list[OutboxRelay] = []
        self._consumers: list[EventConsumer] = []
        self._on_start: list[Callable[[], Awaitable[None]]] = []
        self._background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._background_tasks: list[asyncio.Task[None]] = []
        self._health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.bound_port: int | None = None
        self.admin_server: grpc.aio.Server | None = None
        self.admin_port: int | None = None
        """Where the internal admin service listens (its own port: ADMIN_HOST/ADMIN_PORT)."""
        self._health_task: asyncio.Task[None] | None = None
        self._kafka_task: asyncio.Task[None] | None = None
        self._started_consumers: list[EventConsumer] = []
        self._health_names: list[str] = [""]
        self._owners: dict[str, OwnerLookup] = {}
        self._admin: admin.AdminServicer | None = None

    def add_service(
        self, adder: Callable[[Any, grpc.aio.Server], None], servicer: Any, name: str
    ) -> None:
        self._services.append((adder, servicer, name))

    def outbox_relay(self, collection: AsyncCollection[Document]) -> OutboxRelay:
        relay = OutboxRelay(collection, self.producer, service=self.settings.service_name)
        self._relays.append(relay)
        return relay

    def consume(
        self,
        topics: Sequence[str],
        handlers: Mapping[str, EventHandler],
        batch_handlers: Mapping[str, BatchHandler] | None = None,
    ) -> EventConsumer:
        consumer = EventConsumer(
            kafka=self.settings.kafka,
            group_id=self.settings.consumer_group,
            topics=list(topics),
            handlers=handlers,
            producer=self.producer,
            service=self.settings.service_name,
            batch_handlers=batch_handlers,
        )
        self._consumers.append(consumer)
        return consumer

    def admin(
        self,
        owner: admin.Owner,
        consumer: admin.Consumer | None = None,
        read_models: Mapping[str, admin.ReadModel] | None = None,
    ) -> None:
        """Serve the internal admin service (svckit.admin) with this service's use cases:
        `read_models` says what each consumed topic builds, for replays to compare."""
        self._admin = admin.AdminServicer(
            owner,
            consumer,
            read_models,
            kafka=self.settings.kafka,
            consumer_group=self.settings.consumer_group,
            service=self.settings.service_name,
        )

    def owners(self, resource: str, lookup: OwnerLookup) -> None:
        """How the policy finds who owns a `resource` (e.g. an order) a request names."""
        self._owners[resource] = lookup

    def _gatekeeper(self) -> Gatekeeper:
        if self.settings.auth is None:
            raise RuntimeError("authentication is not configured: set AUTH_ISSUER, ...")
        verifier = TokenVerifier(self.settings.auth)
        return Gatekeeper(verifier, Authorizer(policy.POLICY, self._owners))

    def on_start(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run before serving, e.g. to create indexes."""
        self._on_start.append(hook)

    def background(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `job` while serving (started after the server, cancelled before consumers
        stop), e.g. a service's own maintenance loop."""
        self._background.append(job)

    async def start(self) -> None:
        s = self.settings
        for hook in self._on_start:
            await hook()
        for relay in self._relays:
            await relay.ensure_index()
        options = [
            ("grpc.max_receive_message_length", s.max_request_bytes),
            ("grpc.max_send_message_length", s.max_message_bytes),
            # A second process must not share the port (and, on FerretDB, the database).
            ("grpc.so_reuseport", 0),
        ]
        gatekeeper = self._gatekeeper()
        server = grpc.aio.server(
            interceptors=[ServerInterceptor(s.service_name, gatekeeper)],
            options=options,
            maximum_concurrent_rpcs=s.max_concurrent_rpcs,
        )
        names = []
        for adder, servicer, name in self._services:
            adder(servicer, server)
            names.append(name)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable(server, [*names, health.SERVICE_NAME])
        self.bound_port = server.add_insecure_port(f"{s.grpc_host}:{s.grpc_port}")
        if self._admin is not None:
            # Its own server and port: what reaches the public port (Envoy, the gateway, any
            # client) can never reach a repair or a replay, whatever the routes say.
            # An interceptor of its own: the interceptor keeps each method's wrapped handler, and
            # one shared with the public server would serve the admin methods there too.
            self.admin_server = grpc.aio.server(
                interceptors=[ServerInterceptor(s.service_name, gatekeeper)], options=options
            )
            admin_pb2_grpc.add_AdminServiceServicer_to_server(self._admin, self.admin_server)
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self.admin_server)
            reflection.enable(self.admin_server, [admin.SERVICE, health.SERVICE_NAME])
            self.admin_port = self.admin_server.add_insecure_port(f"{s.admin_host}:{s.admin_port}")
            await self.admin_server.start()
        await server.start()
        self.server = server
        self._health_names = ["", *names]
        await self._update_health()
        self._health_task = asyncio.create_task(self._watch_health())
        self._kafka_task = asyncio.create_task(self._start_kafka_side())
        self._background_tasks = [asyncio.create_task(job()) for job in self._background]
        log.info("%s serving gRPC on %s:%s", s.service_name, s.grpc_host, self.bound_port)
        if self.admin_server is not None:
            log.info("%s admin service on %s:%s", s.service_name, s.admin_host, self.admin_port)

    async def _start_kafka_side(self) -> None:
        """Producer, relays and consumers, once Kafka answers, however long that takes.

        The service serves RPCs meanwhile (readiness needs only MongoDB): writes land in the
        outbox and are published when the broker is back; health ``events`` says when.
        """
        try:
            await self.producer.start(timeout=None)
            log.info("kafka producer connected")
            if self.settings.outbox_relay_enabled:
                for relay in self._relays:
                    await relay.start()
            for consumer in self._consumers:
                await consumer.start(timeout=None)
                self._started_consumers.append(consumer)
            log.info("relays and consumers started")
            await self._update_health()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("starting the Kafka side failed; exiting so the supervisor restarts us")
            signal.raise_signal(signal.SIGTERM)

    async def _mongodb_ok(self) -> bool:
        try:
            await asyncio.wait_for(self.mongo.admin.command("ping"), 3.0)
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False
        return True

    def stalled_consumers(self) -> list[EventConsumer]:
        return [c for c in self._started_consumers if c.stalled_since is not None]

    async def _update_health(self) -> None:
        """Readiness ("" and each gRPC service) is what the pod can serve: RPCs need MongoDB,
        not Kafka (writes queue in the outbox while the broker is away). Kafka and the event
        flow have names of their own, for dashboards and operators, not for the Service:
        ``kafka`` (the producer reaches the broker) and ``events`` (Kafka side started and no
        consumer holding its position for an outage)."""
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        rpc_status = serving if await self._mongodb_ok() else not_serving
        for name in self._health_names:
            await self._health.set(name, rpc_status)
        kafka_ok = await self.producer.healthy()
        await self._health.set(KAFKA_HEALTH, serving if kafka_ok else not_serving)
        flowing = (
            kafka_ok
            and len(self._started_consumers) == len(self._consumers)
            and not self.stalled_consumers()
        )
        await self._health.set(EVENTS_HEALTH, serving if flowing else not_serving)
        await self._health.set(LIVENESS_HEALTH, serving)

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            try:
                await self._update_health()
            except Exception:  # noqa: BLE001 - a failed probe must not end the watch
                log.exception("health update failed")

    async def stop(self) -> None:
        s = self.settings
        log.info("%s shutting down", s.service_name)
        await self._health.enter_graceful_shutdown()
        if self.admin_server:
            await self.admin_server.stop(s.shutdown_grace_seconds)
        if self.server:
            await self.server.stop(s.shutdown_grace_seconds)
        if self._health_task:
            self._health_task.cancel()
        if self._kafka_task and not self._kafka_task.done():
            self._kafka_task.cancel()
        for task in self._background_tasks:
            task.cancel()
        await asyncio.gather(*self._background_tasks, return_exceptions=True)
        for consumer in self._started_consumers:
            await consumer.stop()
        for relay in self._relays:
            await relay.stop()
        await self.producer.stop()
        await self.mongo.close()
        log.info("%s stopped", s.service_name)

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully."""
        logs.configure(self.settings.service_name, self.settings.log_level)
        tracing.configure(self.settings.service_name, self.settings.tracing)
        metrics.serve(self.settings.metrics_port, self.settings.grpc_host)  # listen where gRPC does
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        await self.stop()
        tracing.shutdown()  # flush the last spans to the collector


class Listens(Protocol):
    """Where a service listens by default: its entry in the system's declaration."""

    @property
    def name(self) -> str: ...
    @property
    def grpc_port(self) -> int: ...
    @property
    def metrics_port(self) -> int: ...
    @property
    def admin_port(self) -> int: ...


def run_service(build: Callable[[Settings], ServiceApp], me: Listens) -> None:
    """The body of every `python -m <service>`: its settings from the environment, uvloop
    when available, then run. A setting it cannot use stops it at once (exit 2), naming the
    variable."""
    try:
        settings = Settings.from_env(
            me.name, grpc_port=me.grpc_port, metrics_port=me.metrics_port, admin_port=me.admin_port
        )
    except ConfigError as exc:
        logs.configure(me.name)
        logging.getLogger(me.name).error("refusing to start: %s", str(exc))
        raise SystemExit(2) from None
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def serve() -> None:
        await build(settings).run()  # built inside the loop: aiokafka binds to it

    try:
        asyncio.run(serve())
    except ConfigError as exc:
        logging.getLogger(settings.service_name).error("refusing to start: %s", str(exc))
        raise SystemExit(2) from None
