"""Service settings, read once from environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass

from svckit import names
from svckit.auth import AuthConfig
from svckit.kafka import KafkaConnection


class ConfigError(ValueError):
    """A setting is missing or unusable: the process refuses to start, saying which."""


@dataclass(frozen=True)
class Settings:
    service_name: str
    grpc_host: str
    grpc_port: int
    admin_host: str
    """Where the internal admin service listens: loopback unless told (a pod: 0.0.0.0, the
    mesh admitting only the operator)."""
    admin_port: int
    metrics_port: int
    mongodb_uri: str
    mongodb_database: str
    kafka: KafkaConnection
    """Brokers and this service's identity on them (KAFKA_* variables, svckit.kafka)."""
    consumer_group: str
    log_level: str
    shutdown_grace_seconds: float
    max_message_bytes: int
    otel_endpoint: str | None
    outbox_relay_enabled: bool = True
    auth: AuthConfig | None = None
    """Whom to trust (AUTH_* variables); a service refuses to start without it."""

    @classmethod
    def from_env(
        cls, service_name: str, *, grpc_port: int, metrics_port: int, admin_port: int
    ) -> Settings:
        """Defaults suit the embedded stack (the ports: the service's topology entry); every
        value can be overridden by env."""
        env = os.environ.get
        return cls(
            service_name=service_name,
            grpc_host=env("GRPC_HOST", "0.0.0.0"),
            grpc_port=int(env("GRPC_PORT", str(grpc_port))),
            admin_host=env("ADMIN_HOST", "127.0.0.1"),
            admin_port=int(env("ADMIN_PORT", str(admin_port))),
            metrics_port=int(env("METRICS_PORT", str(metrics_port))),
            mongodb_uri=env("MONGODB_URI", "mongodb://127.0.0.1:27017/"),
            mongodb_database=env("MONGODB_DATABASE", service_name),
            kafka=KafkaConnection.from_env(),
            consumer_group=env("KAFKA_CONSUMER_GROUP", names.consumer_group(service_name)),
            log_level=env("LOG_LEVEL", "INFO"),
            shutdown_grace_seconds=float(env("SHUTDOWN_GRACE_SECONDS", "10")),
            max_message_bytes=int(env("GRPC_MAX_MESSAGE_BYTES", str(4 * 1024 * 1024))),
            otel_endpoint=env("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            # Fault-injection switch: "off" leaves events in the outbox (tests kill the
            # service with entries pending, then restart it with the relay on).
            outbox_relay_enabled=env("OUTBOX_RELAY", "on") != "off",
            auth=AuthConfig.from_env() if env("AUTH_ISSUER") else None,
        )
