"""Service settings, read once from environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from svckit import envvars, names
from svckit.auth import AuthConfig
from svckit.envvars import ConfigError
from svckit.kafka import KafkaConnection
from svckit.tracing import TracingConfig

__all__ = ["ConfigError", "Settings"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


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
    """The largest reply this server sends."""
    max_request_bytes: int
    """The largest request it takes (gRPC refuses a bigger one, RESOURCE_EXHAUSTED, unread)."""
    max_concurrent_rpcs: int
    """RPCs served at once; past it gRPC answers RESOURCE_EXHAUSTED at once instead of
    queueing work without bound."""
    tracing: TracingConfig
    """OpenTelemetry's own OTEL_* variables (svckit.tracing)."""
    outbox_relay_enabled: bool = True
    auth: AuthConfig | None = None
    """Whom to trust (AUTH_* variables); a service refuses to start without it."""

    @classmethod
    def from_env(
        cls,
        service_name: str,
        *,
        grpc_port: int,
        metrics_port: int,
        admin_port: int,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Defaults suit the embedded stack (the ports: the service's topology entry); every
        value can be overridden by env (docs/configuration.md). ConfigError names the first
        variable that cannot be used."""
        env = os.environ if env is None else env
        return cls(
            service_name=service_name,
            grpc_host=envvars.text(env, "GRPC_HOST", "0.0.0.0"),
            grpc_port=envvars.port(env, "GRPC_PORT", grpc_port),
            admin_host=envvars.text(env, "ADMIN_HOST", "127.0.0.1"),
            admin_port=envvars.port(env, "ADMIN_PORT", admin_port),
            metrics_port=envvars.port(env, "METRICS_PORT", metrics_port),
            mongodb_uri=envvars.text(env, "MONGODB_URI", "mongodb://127.0.0.1:27017/"),
            mongodb_database=envvars.text(env, "MONGODB_DATABASE", service_name),
            kafka=KafkaConnection.from_env(env),
            consumer_group=envvars.text(
                env, "KAFKA_CONSUMER_GROUP", names.consumer_group(service_name)
            ),
            log_level=envvars.choice(env, "LOG_LEVEL", "INFO", LOG_LEVELS),
            shutdown_grace_seconds=envvars.number(env, "SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0),
            max_message_bytes=envvars.integer(
                env, "GRPC_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, minimum=1024
            ),
            max_request_bytes=envvars.integer(
                env, "GRPC_MAX_REQUEST_BYTES", 1024 * 1024, minimum=1024
            ),
            max_concurrent_rpcs=envvars.integer(env, "GRPC_MAX_CONCURRENT_RPCS", 200, minimum=1),
            tracing=TracingConfig.from_env(env),
            # Fault-injection switch: "off" leaves events in the outbox (tests kill the
            # service with entries pending, then restart it with the relay on).
            outbox_relay_enabled=envvars.choice(env, "OUTBOX_RELAY", "on", ("on", "off")) == "on",
            auth=AuthConfig.from_env(env) if env.get("AUTH_ISSUER") else None,
        )
