"""How every Kafka client of the project connects, and the one producer each service shares.

:class:`KafkaConnection` is read once from the environment (or handed out by the embedded stack)
and builds every aiokafka client in the project: services, the CLI, tests and benchmarks. No
other module calls an aiokafka constructor, so a broker that wants SASL or TLS needs settings,
not code. With nothing set it is PLAINTEXT to 127.0.0.1:9092::

    KAFKA_BOOTSTRAP_SERVERS   host:port[,host:port...]
    KAFKA_SECURITY_PROTOCOL   PLAINTEXT (default) | SSL | SASL_PLAINTEXT | SASL_SSL
    KAFKA_SASL_MECHANISM      SCRAM-SHA-512 (default with SASL_*) | SCRAM-SHA-256 | PLAIN
    KAFKA_SASL_USERNAME       this client's identity
    KAFKA_SASL_PASSWORD       its password, or KAFKA_SASL_PASSWORD_FILE: a file holding it
    KAFKA_SSL_CAFILE          CA bundle the broker's certificate must chain to (SSL, SASL_SSL;
                              default: the system's trust store)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import RecordMetadata

from svckit.envelope import Headers
from svckit.envvars import ConfigError

log = logging.getLogger(__name__)

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


class KafkaSettingsError(ConfigError):
    """The KAFKA_* variables contradict each other; refused at start-up, never guessed."""


@dataclass(frozen=True)
class KafkaConnection:
    """Where a client connects and as whom; builds the aiokafka clients."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    """Where the password was read from: passed on to child processes instead of the secret."""
    ssl_cafile: str | None = None

    def __post_init__(self) -> None:
        if self.security_protocol not in PROTOCOLS:
            raise KafkaSettingsError(
                f"KAFKA_SECURITY_PROTOCOL {self.security_protocol!r} is not one of {PROTOCOLS}"
            )
        if self.sasl:
            if self.sasl_mechanism not in MECHANISMS:
                raise KafkaSettingsError(
                    f"KAFKA_SASL_MECHANISM {self.sasl_mechanism!r} is not one of {MECHANISMS}"
                )
            if not self.username or not self.password:
                raise KafkaSettingsError(
                    f"{self.security_protocol} needs KAFKA_SASL_USERNAME and "
                    "KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)"
                )
        elif self.username or self.password:
            # Credentials with a protocol that sends none would connect anonymously.
            raise KafkaSettingsError(
                f"KAFKA_SASL_USERNAME/PASSWORD are set but KAFKA_SECURITY_PROTOCOL is "
                f"{self.security_protocol}; use SASL_SSL or SASL_PLAINTEXT"
            )

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaConnection:
        """The KAFKA_* variables of `env` (default: this process's environment)."""
        env = os.environ if env is None else env
        protocol = (env.get("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
        password_file = env.get("KAFKA_SASL_PASSWORD_FILE") or None
        password = env.get("KAFKA_SASL_PASSWORD") or None
        if password_file and password:
            raise KafkaSettingsError("set KAFKA_SASL_PASSWORD or _FILE, not both")
        if password_file:
            password = read_secret(password_file)
        default_mechanism = "SCRAM-SHA-512" if protocol.startswith("SASL_") else None
        return cls(
            bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP,
            security_protocol=protocol,
            sasl_mechanism=(env.get("KAFKA_SASL_MECHANISM") or default_mechanism),
            username=env.get("KAFKA_SASL_USERNAME") or None,
            password=password,
            password_file=password_file,
            ssl_cafile=env.get("KAFKA_SSL_CAFILE") or None,
        )

    def with_bootstrap(self, bootstrap_servers: str | None) -> KafkaConnection:
        """The same identity on other brokers (a `--kafka` flag); None keeps these."""
        if not bootstrap_servers:
            return self
        return dataclasses.replace(self, bootstrap_servers=bootstrap_servers)

    def env(self) -> dict[str, str]:
        """The variables that give a child process this connection (a file, not a password,
        when the password came from one)."""
        out = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "KAFKA_SECURITY_PROTOCOL": self.security_protocol,
        }
        if self.sasl:
            out["KAFKA_SASL_MECHANISM"] = str(self.sasl_mechanism)
            out["KAFKA_SASL_USERNAME"] = str(self.username)
            if self.password_file:
                out["KAFKA_SASL_PASSWORD_FILE"] = self.password_file
            else:
                out["KAFKA_SASL_PASSWORD"] = str(self.password)
        if self.ssl_cafile:
            out["KAFKA_SSL_CAFILE"] = self.ssl_cafile
        return out

    def librdkafka_config(self) -> dict[str, str]:
        """The same connection in librdkafka's terms (kcat ``-F``, confluent-kafka)."""
        out = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.lower(),
        }
        if self.sasl:
            out["sasl.mechanisms"] = str(self.sasl_mechanism)
            out["sasl.username"] = str(self.username)
            out["sasl.password"] = str(self.password)
        if self.ssl_cafile:
            out["ssl.ca.location"] = self.ssl_cafile
        return out

    def options(self) -> dict[str, Any]:
        """Connection keyword arguments every aiokafka client constructor takes."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.sasl:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.username
            opts["sasl_plain_password"] = self.password
        if self.tls:
            opts["ssl_context"] = self.ssl_context()
        return opts

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the broker's certificate and host name against KAFKA_SSL_CAFILE (or the
        system's trust store)."""
        return create_ssl_context(cafile=self.ssl_cafile)

    def consumer(self, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*topics, **self.options(), **kwargs)

    def producer(self, **kwargs: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(**self.options(), **kwargs)

    def admin(self, **kwargs: Any) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.options(), **kwargs)

    def client(self, **kwargs: Any) -> AIOKafkaClient:
        """The bare protocol client, for requests aiokafka's admin client lacks (ACLs)."""
        return AIOKafkaClient(**self.options(), **kwargs)


def read_secret(path: str) -> str:
    """A secret file's content without its trailing newline (a mounted Secret or a run dir's
    generated password)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        raise KafkaSettingsError(f"cannot read KAFKA_SASL_PASSWORD_FILE {path}: {exc}") from exc


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


async def group_clients(admin: AIOKafkaAdminClient, group: str) -> set[str]:
    """The client ids of the members the group's coordinator lists now (any state)."""
    described = await admin.describe_consumer_groups([group])
    clients: set[str] = set()
    for response in described:
        for desc in response.to_object()["groups"]:
            if desc["error_code"]:
                raise KafkaError(f"describing group {group}: error {desc['error_code']}")
            clients.update(m["client_id"] for m in desc["members"])
    return clients


class EventProducer:
    """acks=all with idempotence, so a retried send never duplicates within a session."""

    def __init__(self, kafka: KafkaConnection, client_id: str, *, linger_ms: int = 5) -> None:
        self._producer = kafka.producer(
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
