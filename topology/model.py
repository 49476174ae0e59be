"""What a topology entry is (a service, a topic it publishes), and what the whole system
derives from the entries: the topics, who consumes each, the dead-letter queues, the Kafka
identities and the consumer groups.

The declaration itself is `topology/__init__.py`; this module knows no service.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from svckit.names import consumer_group, dlq_topic


@dataclass(frozen=True)
class Topic:
    """A topic and the facts on it: one publisher owns it."""

    name: str
    events: tuple[str, ...]
    """The protobuf message names (CloudEvents `ce_type`) published on it."""
    key: str
    """What the record key is (an aggregate's id): per-key order is what consumers rely on."""
    compacted: bool = False
    """Every event carries the aggregate's whole state, so the latest per key is enough to
    rebuild a copy at any age: the broker keeps that (log compaction) instead of 7 days."""


@dataclass(frozen=True)
class Service:
    """One service: what it serves, stores, publishes and consumes.

    A consume-only service publishes nothing (no aggregate, no topics); a publish-only
    service consumes nothing (no group, no DLQ)."""

    name: str
    grpc_port: int
    """Its gRPC port on one machine (`storefront run`); in Kubernetes every pod uses 50051."""
    metrics_port: int
    admin_port: int
    """Its internal admin service's port (repairs, replays: the operator only), apart from
    the public one, on 127.0.0.1 on one machine; in Kubernetes every pod uses 50061, which the
    mesh admits only from the operator's identity."""
    package: str = ""
    """The Python package run as ``python -m <package>`` (default ``<name>_svc``)."""
    api: str = ""
    """Its public gRPC service's full name, routed by Envoy and the mesh's gateway; "" for an
    internal service (no route: only its health, metrics and admin service)."""
    database: str = ""
    """Its own MongoDB database (default: its name)."""
    collections: Mapping[str, str] = field(default_factory=dict)
    """Collection name -> what it holds."""
    aggregate: str = ""
    """The collection whose documents carry the outbox (required when it publishes)."""
    publishes: tuple[Topic, ...] = ()
    consumes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.package:
            object.__setattr__(self, "package", f"{self.name}_svc")
        if not self.database:
            object.__setattr__(self, "database", self.name)
        if self.publishes and self.aggregate not in self.collections:
            raise ValueError(f"{self.name} publishes, so its aggregate must be a collection")

    @property
    def public(self) -> bool:
        return bool(self.api)

    @property
    def group(self) -> str | None:
        """Its consumer group, if it consumes."""
        return consumer_group(self.name) if self.consumes else None

    @property
    def topics(self) -> tuple[str, ...]:
        """The names of the topics it publishes."""
        return tuple(t.name for t in self.publishes)

    def dlq(self, topic: str) -> str:
        """Where it parks what it cannot apply from `topic`: its own, never shared."""
        if topic not in self.consumes:
            raise KeyError(f"{self.name} does not consume {topic}")
        return dlq_topic(topic, consumer_group(self.name))


@dataclass(frozen=True)
class DeadLetters:
    """One consumer's dead-letter queue of one topic."""

    name: str
    topic: str
    consumer: str


@dataclass(frozen=True)
class System:
    """Every service, in the order `storefront run` starts them (consumers wait for the
    topics they read, so the order is for reading, not for correctness)."""

    services: tuple[Service, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for s in self.services:
            if s.name in seen:
                raise ValueError(f"service {s.name} declared twice")
            seen.add(s.name)
        published = [t for s in self.services for t in s.topics]
        twice = {t for t in published if published.count(t) > 1}
        if twice:
            raise ValueError(f"topics with two publishers: {sorted(twice)}")
        unknown = {t for s in self.services for t in s.consumes} - set(published)
        if unknown:
            raise ValueError(f"consumed but published by no service: {sorted(unknown)}")
        ports = [p for s in self.services for p in (s.grpc_port, s.metrics_port, s.admin_port)]
        if len(set(ports)) != len(ports):
            raise ValueError("two services share a port")

    def __iter__(self) -> Iterator[Service]:
        return iter(self.services)

    def adding(self, *services: Service) -> System:
        """This system with more services (a test's throwaway consumer, for instance)."""
        return replace(self, services=(*self.services, *services))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.services)

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(f"no service {name!r}; the system has {', '.join(self.names)}")

    @property
    def public(self) -> tuple[Service, ...]:
        return tuple(s for s in self.services if s.public)

    @property
    def publishers(self) -> tuple[Service, ...]:
        return tuple(s for s in self.services if s.publishes)

    @property
    def consumers(self) -> tuple[Service, ...]:
        return tuple(s for s in self.services if s.consumes)

    @property
    def topics(self) -> tuple[str, ...]:
        """Every event topic, in declaration order."""
        return tuple(t for s in self.services for t in s.topics)

    def publisher_of(self, topic: str) -> Service:
        for s in self.services:
            if topic in s.topics:
                return s
        raise KeyError(f"no service publishes {topic!r}")

    def consumers_of(self, topic: str) -> tuple[Service, ...]:
        """Every service consuming `topic`: each in its own group, with its own DLQ."""
        return tuple(s for s in self.services if topic in s.consumes)

    @property
    def dead_letters(self) -> tuple[DeadLetters, ...]:
        """One DLQ per consumer group and topic it consumes."""
        return tuple(DeadLetters(s.dlq(t), t, s.name) for s in self.services for t in s.consumes)

    @property
    def all_topics(self) -> tuple[str, ...]:
        """Every topic the system uses: the event topics and the dead-letter queues."""
        return (*self.topics, *(d.name for d in self.dead_letters))
