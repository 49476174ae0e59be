"""The embedded stack: a real Kafka broker and a MongoDB-compatible database, no Docker.

Why: the services and tests need a real Kafka (4.1.1, KRaft combined mode, one node) and a real
MongoDB wire endpoint (FerretDB on its PostgreSQL backend, a private cluster: see
:mod:`stack.postgres`). All run as local processes under the :class:`stack.procs.Supervisor` of
a run directory, bound to 127.0.0.1 only::

    <run_dir>/data/kafka        Kafka log dirs + KRaft metadata (formatted once)
    <run_dir>/data/postgres     the PostgreSQL cluster FerretDB stores documents in
    <run_dir>/data/ferretdb     FerretDB's state file
    <run_dir>/secrets/          0700: the PostgreSQL passwords (superuser, one per database role),
                                one Kafka password per user (files 0600, stack.private)
    <run_dir>/config/           generated server.properties (0600: the broker's password)
    <run_dir>/logs/, pids/      see stack.procs
    <run_dir>/stack.json        the ports in use, so later commands reuse them

The broker always runs with SASL/SCRAM and ACLs (:mod:`stack.kafka_security`): every client
connects as one of the run dir's users, :meth:`EmbeddedStack.kafka_as`.

FerretDB refuses clients without credentials; each service, the operator and tests log in as a
database role of their own (:meth:`EmbeddedStack.mongodb_uri_as`, stack.postgres).

External infrastructure: if ``MONGODB_URI`` is set no FerretDB is started and that URI is used;
if ``KAFKA_BOOTSTRAP_SERVERS`` is set no Kafka is started and those brokers are used, with the
identity the other ``KAFKA_*`` variables give (svckit.kafka) for every client. The project's
topics are ensured (created if missing) in both cases.

Use::

    st = EmbeddedStack(Path(".run"))              # default ports 9092/9093/27017/5433
    st.start()
    st.kafka_bootstrap, st.mongodb_uri, st.env()
    st.kafka                                      # tests' KafkaConnection (may write)
    st.kafka_as(OPERATOR)                         # the operator commands' (reads only)
    st.kafka_as("orders")                         # a service's
    st.supervisor.kill(KAFKA); st.supervisor.restart(KAFKA)   # crash + recover, same data
    st.stop()                                     # stops every process recorded in run_dir
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import topology
from stack import tools
from stack.kafka_security import BROKER, OPERATOR, TOOLING, Credentials, all_acls, sync_acls
from stack.postgres import OPERATOR as OPERATOR_ROLE
from stack.postgres import POSTGRES, PostgresCluster
from stack.postgres import TOOLING as TOOLING_ROLE
from stack.private import create_private
from stack.procs import ProcessError, Supervisor, port_open
from svckit.kafka import KafkaConnection

KAFKA = "kafka"
"""Supervisor name of the Kafka broker process (of the first node of a cluster)."""
FERRETDB = "ferretdb"
"""Supervisor name of the FerretDB process."""

TOPIC_PARTITIONS = 3

KAFKA_HEAP = os.environ.get("STACK_KAFKA_HEAP", "512m")
KAFKA_JVM_OPTS = os.environ.get(
    "STACK_KAFKA_JVM_OPTS",
    # C1-only JIT: faster start and less CPU stolen from the services on a 2-core box; peak
    # broker throughput is irrelevant for a dev/test node.
    "-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:TieredStopAtLevel=1",
).split()
"""Extra JVM flags for the broker and the storage tool (override with STACK_KAFKA_JVM_OPTS)."""

T = TypeVar("T")
Log = Callable[[str], None]


BROKER_CHOICES = (1, 3)
"""One node, or a KRaft cluster of three combined broker-controllers (a quorum of 3 survives
the loss of one; replication 3 with min.insync.replicas 2 keeps accepting acks=all writes
with one broker down)."""


def broker_name(k: int) -> str:
    """The Supervisor name of node `k` (from 0): ``kafka``, ``kafka-2``, ``kafka-3``."""
    return KAFKA if k == 0 else f"{KAFKA}-{k + 1}"


@dataclass(frozen=True)
class Ports:
    """TCP ports of the embedded servers (all on 127.0.0.1)."""

    kafka: int = 9092
    """Kafka client (SASL_PLAINTEXT, SCRAM) listener: the bootstrap port."""
    kafka_controller: int = 9093
    """KRaft controller listener."""
    mongodb: int = 27017
    """FerretDB's MongoDB wire protocol listener."""
    postgres: int = 5433
    """The private PostgreSQL cluster (5433: a system PostgreSQL may hold 5432)."""
    more_brokers: tuple[tuple[int, int], ...] = ()
    """(client, controller) ports of the cluster's other nodes, none for a single broker."""

    def __post_init__(self) -> None:
        # Read back from stack.json, the pairs are lists.
        object.__setattr__(self, "more_brokers", tuple(tuple(p) for p in self.more_brokers))
        if self.brokers not in BROKER_CHOICES:
            raise ValueError(f"brokers must be one of {BROKER_CHOICES}, not {self.brokers}")

    @property
    def brokers(self) -> int:
        return 1 + len(self.more_brokers)

    @property
    def kafka_nodes(self) -> tuple[tuple[int, int], ...]:
        """(client, controller) ports of every node, the first first."""
        return ((self.kafka, self.kafka_controller), *self.more_brokers)

    def with_brokers(self, brokers: int) -> Ports:
        """These ports for `brokers` nodes: node k (from 0) on the first's ports + 2k
        (9092/9093, 9094/9095, 9096/9097)."""
        more = tuple((self.kafka + 2 * k, self.kafka_controller + 2 * k) for k in range(1, brokers))
        return replace(self, more_brokers=more)

    @classmethod
    def free(cls, brokers: int = 1) -> Ports:
        """Currently unused ports, so a test stack never clashes with ``make up``."""
        kafka, controller, mongodb, postgres, *more = free_ports(4 + 2 * (brokers - 1))
        pairs = tuple(zip(more[::2], more[1::2], strict=True))
        return cls(kafka, controller, mongodb, postgres, pairs)


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the kernel reports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run_sync(make_coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even if this thread has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(make_coro()))
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="stack-sync")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


async def ensure_topics(
    kafka: KafkaConnection,
    topics: Sequence[str] = topology.SYSTEM.all_topics,
    *,
    partitions: int = TOPIC_PARTITIONS,
    replication_factor: int | None = None,
    max_wait: float = 60.0,
) -> list[str]:
    """Create whichever of ``topics`` are missing and wait until all of them have leaders.

    Works against any Kafka (embedded or external). ``replication_factor`` defaults to
    ``min(3, number of brokers)``. Returns the topics that were created. Retries while the
    broker is still starting, up to ``max_wait`` seconds.
    """
    from aiokafka.admin import NewTopic
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + max_wait
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        admin = kafka.admin(request_timeout_ms=15000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t not in existing]
            created: list[str] = []
            if missing:
                brokers = (await admin.describe_cluster())["brokers"]
                rf = replication_factor or max(1, min(3, len(brokers)))
                resp = await admin.create_topics(
                    [NewTopic(t, partitions, rf) for t in missing], timeout_ms=15000
                )
                for topic, code, *rest in resp.topic_errors:
                    if code == 0:
                        created.append(topic)
                    elif code != 36:  # 36 = TOPIC_ALREADY_EXISTS (a concurrent creator won)
                        raise KafkaError(f"creating topic {topic} failed: code {code} {rest}")
            await _wait_for_leaders(admin, topics, deadline)
            return created
        except (KafkaError, OSError, TimeoutError) as exc:
            last_error = exc
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    raise TimeoutError(
        f"could not ensure topics on {kafka.bootstrap_servers} in {max_wait:.0f}s: {last_error}"
    )


async def _wait_for_leaders(admin: Any, topics: Sequence[str], deadline: float) -> None:
    """Return once every partition of ``topics`` has an elected leader (producers can write)."""
    while True:
        described = await admin.describe_topics(list(topics))
        ready = {
            d["topic"]
            for d in described
            if d["error_code"] == 0
            and d["partitions"]
            and all(p["leader"] >= 0 for p in d["partitions"])
        }
        if ready >= set(topics):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics without leaders: {sorted(set(topics) - ready)}")
        await asyncio.sleep(0.2)


def list_topics(kafka: KafkaConnection, timeout: float = 30.0) -> list[str]:
    """Topic names `kafka`'s identity may see (sync helper for scripts and tests)."""

    async def go() -> list[str]:
        admin = kafka.admin(request_timeout_ms=int(timeout * 1000))
        try:
            await admin.start()
            return sorted(await admin.list_topics())
        finally:
            await admin.close()

    return _run_sync(go)


def _has_password(uri: str) -> bool:
    return urllib.parse.urlsplit(uri).password is not None


def _kafka_cluster_id() -> str:
    """A random KRaft cluster id (16 random bytes, URL-safe base64 without padding)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class EmbeddedStack:
    """Kafka + FerretDB for one run directory; see the module docstring.

    ``ports=None`` reuses the ports recorded by an earlier start in the same ``run_dir``
    (so ``down``/``status`` and restarts agree), else the defaults 9092/9093/27017.
    ``log`` receives progress lines (default: print); pass ``lambda _: None`` to silence.
    """

    def __init__(
        self,
        run_dir: Path | str,
        ports: Ports | None = None,
        *,
        log: Log | None = None,
        brokers: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.state_file = self.run_dir / "stack.json"
        self.ports = ports or self._saved_ports() or Ports()
        if brokers is not None and brokers != self.ports.brokers:
            self.ports = self.ports.with_brokers(brokers)
        self.supervisor = Supervisor(self.run_dir)
        self.postgres = PostgresCluster(self.run_dir, self.ports.postgres, self.supervisor)
        self.log: Log = log or (lambda msg: print(msg, flush=True))
        self.external_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None
        self.kafka_credentials = Credentials(self.run_dir)
        self.external_mongodb = os.environ.get("MONGODB_URI") or None
        self.timings: dict[str, float] = {}
        """Seconds taken by each step of the last :meth:`start`."""

    # ----- endpoints -----------------------------------------------------------------------

    @property
    def kafka_bootstrap(self) -> str:
        """Bootstrap servers for Kafka clients (external one if configured): every node."""
        return self.external_kafka or ",".join(
            f"127.0.0.1:{client}" for client, _ in self.ports.kafka_nodes
        )

    @property
    def brokers(self) -> tuple[str, ...]:
        """The Supervisor names of the embedded Kafka nodes (none for an external Kafka)."""
        return (
            () if self.external_kafka else tuple(broker_name(k) for k in range(self.ports.brokers))
        )

    def kafka_as(self, user: str) -> KafkaConnection:
        """How `user` (a service, ``operator``) connects; an external Kafka gets the one
        identity of the KAFKA_* variables, whoever asks."""
        if self.external_kafka:
            return KafkaConnection.from_env()
        return self.kafka_credentials.connection(self.kafka_bootstrap, user)

    @property
    def kafka(self) -> KafkaConnection:
        """The tooling identity's connection, for tests and benchmarks that write events or
        create topics (stack.kafka_security); the operator commands read as ``operator``."""
        return self.kafka_as(TOOLING)

    def mongodb_uri_as(self, role: str, *, password: bool = True, port: int | None = None) -> str:
        """How `role` (a service, ``operator``, ``tooling``: stack.postgres.ROLES) connects to
        the embedded database: PLAIN credentials, which FerretDB hands to PostgreSQL. Without
        `password` the URI names the user only (its password is in
        :meth:`mongodb_password_file`). An external MONGODB_URI is everyone's, unchanged."""
        if self.external_mongodb:
            return self.external_mongodb
        secret = ""
        if password:
            secret = ":" + urllib.parse.quote(self.postgres.role_password(role), safe="")
        return (
            f"mongodb://{role}{secret}@127.0.0.1:{port or self.ports.mongodb}/"
            "?authMechanism=PLAIN&authSource=%24external"
        )

    def mongodb_password_file(self, role: str) -> Path:
        return self.postgres.role_password_file(role)

    @property
    def mongodb_uri(self) -> str:
        """Tests' and benchmarks' MongoDB URI (the ``tooling`` role, password included: for
        this process only; external: MONGODB_URI)."""
        return self.mongodb_uri_as(TOOLING_ROLE)

    def env(self) -> dict[str, str]:
        """Environment variables that point a tool at this stack (as the Kafka operator, who
        reads only; a service adds its own identity, ``kafka_as(service).env()``)."""
        mongodb = (
            {"MONGODB_URI": self.external_mongodb}
            if self.external_mongodb
            else {
                "MONGODB_URI": self.mongodb_uri_as(OPERATOR_ROLE, password=False),
                "MONGODB_PASSWORD_FILE": str(self.mongodb_password_file(OPERATOR_ROLE)),
            }
        )
        return {
            **self.kafka_as(OPERATOR).env(),
            **mongodb,
            "STACK_RUN_DIR": str(self.run_dir),
            "STOREFRONT_TOOLS_DIR": str(tools.TOOLS_DIR),
        }

    def write_env_file(self, path: Path | None = None) -> Path:
        """Write :meth:`env` as shell ``KEY=value`` lines (default ``<run_dir>/stack.env``)."""
        path = path or self.run_dir / "stack.env"
        # A password from the environment stays there (an external MONGODB_URI with one is
        # left out); the embedded stack's are files.
        lines = [
            f"{k}={v}"
            for k, v in self.env().items()
            if k != "KAFKA_SASL_PASSWORD" and not (k == "MONGODB_URI" and _has_password(v))
        ]
        new = path.with_name(path.name + ".new")
        new.unlink(missing_ok=True)
        create_private(new, ("\n".join(lines) + "\n").encode())
        new.replace(path)
        return path

    def is_up(self) -> bool:
        """True if every server this stack would start is running (external ones count)."""
        kafka_ok = all(self.supervisor.is_running(b) for b in self.brokers)
        mongo_ok = bool(self.external_mongodb) or all(
            self.supervisor.is_running(n) for n in (POSTGRES, FERRETDB)
        )
        return kafka_ok and mongo_ok

    # ----- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> dict[str, float]:
        """Start what is not running yet, ensure the topics, return per-step timings (s).

        Installs the Kafka jars / FerretDB binary / PostgreSQL on first use. Kafka and
        PostgreSQL are launched together; FerretDB once PostgreSQL answers, and the JVM start
        dominates. On failure everything this call started is stopped again.
        """
        self.timings = {}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        saved = self._saved_ports()
        running = [n for n in (*self.brokers, POSTGRES, FERRETDB) if self.supervisor.is_running(n)]
        if saved and saved != self.ports and running:
            raise ProcessError(
                f"{', '.join(running)} already running in {self.run_dir} on {saved}; "
                "stop it before changing ports"
            )
        self._save_ports()
        started: list[str] = []
        try:
            needed = [] if self.external_kafka else ["kafka"]
            needed += [] if self.external_mongodb else ["postgresql", "ferretdb"]
            if needed:
                self._step("install check", lambda: tools.ensure(needed, log=self.log))
            waits: list[tuple[str, int]] = []
            if not self.external_kafka:
                self._step("kafka format", self._format_kafka)
            for k, name in enumerate(self.brokers):
                if not self.supervisor.is_running(name):
                    self._step(f"{name} spawn", functools.partial(self._spawn_kafka, k))
                    started.append(name)
                    waits.append((name, self.ports.kafka_nodes[k][0]))
            if not self.external_mongodb and not self.supervisor.is_running(POSTGRES):
                self._step("postgres init", self.postgres.init)
                self._check_port_free(POSTGRES, [self.ports.postgres])
                self._step("postgres spawn", self.postgres.spawn)
                started.append(POSTGRES)
            if not self.external_mongodb:
                self._step(
                    "postgres ready", lambda: self._wait(POSTGRES, self.ports.postgres, timeout)
                )
                self._step("postgres setup", lambda: self.postgres.setup(timeout))
            if not self.external_mongodb and not self.supervisor.is_running(FERRETDB):
                self._step("ferretdb spawn", self._spawn_ferretdb)
                started.append(FERRETDB)
                waits.append((FERRETDB, self.ports.mongodb))
            for name, port in waits:
                self._step(f"{name} ready", functools.partial(self._wait, name, port, timeout))
            if not self.external_kafka:
                self._step("kafka acls", lambda: self._sync_acls(timeout))
            self._step("topics", lambda: self._ensure_topics(timeout))
        except BaseException:
            for name in started:
                self.supervisor.stop(name, timeout=5.0)
            raise
        return self.timings

    def stop(self, timeout: float = 15.0) -> list[str]:
        """Stop every process recorded in the run dir (services, Envoy, Kafka, FerretDB...).

        Newest first, so services go before the broker and database they use. Returns the
        names that were running.
        """
        return self.supervisor.stop_all(timeout)

    # ----- internals -----------------------------------------------------------------------

    def _step(self, label: str, fn: Callable[[], object]) -> None:
        t0 = time.monotonic()
        fn()
        self.timings[label] = time.monotonic() - t0

    def _saved_ports(self) -> Ports | None:
        try:
            return Ports(**json.loads(self.state_file.read_text())["ports"])
        except (FileNotFoundError, KeyError, TypeError, ValueError):
            return None

    def _save_ports(self) -> None:
        self.state_file.write_text(json.dumps({"ports": asdict(self.ports)}, indent=2))

    def _wait(self, name: str, port: int, timeout: float) -> None:
        self.supervisor.wait_ready(name, port, timeout)

    def _admin_connection(self) -> KafkaConnection:
        """The stack's own set-up runs as the broker's super user (external: the env's)."""
        return self.kafka_as(BROKER)

    def _sync_acls(self, timeout: float) -> None:
        from aiokafka.errors import KafkaError

        async def go() -> tuple[int, int]:
            # The port opens before the broker has loaded its users from the metadata log.
            deadline = time.monotonic() + timeout
            while True:
                try:
                    return await sync_acls(self._admin_connection(), all_acls())
                except (KafkaError, OSError) as exc:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"could not set Kafka's ACLs: {exc!r}") from exc
                    await asyncio.sleep(0.5)

        created, deleted = _run_sync(go)
        if created or deleted:
            self.log(f"[stack] kafka ACLs: {created} created, {deleted} removed")

    def _ensure_topics(self, timeout: float) -> None:
        created = _run_sync(lambda: ensure_topics(self._admin_connection(), max_wait=timeout))
        if created:
            self.log(f"[stack] created topics: {', '.join(created)}")

    @property
    def kafka_data(self) -> Path:
        """Kafka's log/metadata directory (of the first node)."""
        return self.kafka_data_of(0)

    def kafka_data_of(self, k: int) -> Path:
        """Node `k`'s log/metadata directory."""
        return self.run_dir / "data" / broker_name(k)

    @property
    def kafka_config(self) -> Path:
        """The generated ``server.properties`` (of the first node)."""
        return self.kafka_config_of(0)

    def kafka_config_of(self, k: int) -> Path:
        return self.run_dir / "config" / f"{broker_name(k)}.properties"

    def active_controller(self) -> str | None:
        """The Supervisor name of the node leading the KRaft quorum now, as the nodes' own
        quorum-state files say (the newest epoch wins); None if none has one yet."""
        best: tuple[int, int] | None = None
        for k in range(self.ports.brokers):
            path = self.kafka_data_of(k) / "__cluster_metadata-0" / "quorum-state"
            try:
                state = json.loads(path.read_text())
            except (FileNotFoundError, ValueError):
                continue
            epoch, leader = int(state.get("leaderEpoch", -1)), int(state.get("leaderId", -1))
            if leader > 0 and (best is None or epoch > best[0]):
                best = (epoch, leader)
        return None if best is None else broker_name(best[1] - 1)

    def _kafka_properties(self, k: int = 0) -> str:
        p = self.ports
        client, controller = p.kafka_nodes[k]
        n = p.brokers
        # One node: the only broker and the only (standalone) KRaft controller. Three: each is
        # a broker and a voter of a static quorum of three.
        quorum = (
            {"controller.quorum.bootstrap.servers": f"127.0.0.1:{controller}"}
            if n == 1
            else {
                "controller.quorum.voters": ",".join(
                    f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(p.kafka_nodes)
                )
            }
        )
        # Replication 3 with min.insync.replicas 2 (acks=all writes go on with a node down);
        # a single node cannot hold more than one replica.
        rf, isr = (1, 1) if n == 1 else (3, 2)
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(k + 1),
            **quorum,
            "listeners": f"CLIENT://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{client}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "CLIENT",
            "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT",
            **self.kafka_credentials.broker_properties("CLIENT"),
            "log.dirs": str(self.kafka_data_of(k)),
            "offsets.topic.replication.factor": str(rf),
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": str(isr),
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": str(rf),
            "share.coordinator.state.topic.min.isr": str(isr),
            "default.replication.factor": str(rf),
            "min.insync.replicas": str(isr),
            # A replica that comes back catches up; one that never was in sync never leads.
            "unclean.leader.election.enable": "false",
            "num.partitions": str(TOPIC_PARTITIONS),
            # Topics are created explicitly (ensure_topics); a typo must not create a topic.
            "auto.create.topics.enable": "false",
            # Consumers in tests join and start at once instead of waiting 3 s for peers.
            "group.initial.rebalance.delay.ms": "0",
            # After a crash the restarted broker cannot register until the controller expires
            # its previous session; 5 s instead of 9 s halves the restart time in fault tests.
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "5000",
            # Sized for a 2-core dev machine.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.hours": "168",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        return "".join(f"{k}={v}\n" for k, v in settings.items())

    def _java_argv(self, main_class: str, *args: str) -> list[str]:
        return [
            str(tools.path("java")),
            f"-Xms{KAFKA_HEAP}" if main_class == "kafka.Kafka" else "-Xms64m",
            f"-Xmx{KAFKA_HEAP}" if main_class == "kafka.Kafka" else "-Xmx256m",
            *KAFKA_JVM_OPTS,
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={tools.path('kafka-log4j2')}",
            "-cp",
            f"{tools.path('kafka')}/*",
            main_class,
            *args,
        ]

    def _format_kafka(self) -> None:
        """Write each node's config and, on first use only, format its storage (a standalone
        quorum, or a node of the static quorum of three) with every user's SCRAM credential:
        the same credentials on every node, so whichever leads writes the same users."""
        formatted = [
            (self.kafka_data_of(k) / "meta.properties").exists() for k in range(self.ports.brokers)
        ]
        if any(formatted) and not self.kafka_credentials.exist():
            raise ProcessError(
                f"{self.kafka_data} was formatted before Kafka had users and ACLs (or its "
                f"passwords in {self.kafka_credentials.dir} are gone); remove it to start "
                "afresh (its topics' records are lost, the databases are kept)"
            )
        others = [
            d.name
            for d in sorted((self.run_dir / "data").glob(f"{KAFKA}*"))
            if d.name not in self.brokers and (d / "meta.properties").exists()
        ]
        if any(formatted) and (not all(formatted) or others):
            raise ProcessError(
                f"the Kafka data in {self.run_dir / 'data'} is of a cluster of another size "
                f"than {self.ports.brokers}; remove {self.run_dir / 'data'}/{KAFKA}* to start "
                "afresh (its topics' records are lost, the databases are kept)"
            )
        self.kafka_credentials.create()
        for k in range(self.ports.brokers):
            config = self.kafka_config_of(k)
            config.parent.mkdir(parents=True, exist_ok=True)
            config.touch(mode=0o600)
            config.chmod(0o600)
            config.write_text(self._kafka_properties(k))
        if all(formatted):
            return
        cluster_id = _kafka_cluster_id()
        scram = self.kafka_credentials.format_args()
        standalone = ["--standalone"] if self.ports.brokers == 1 else []
        formats = []
        for k in range(self.ports.brokers):  # the nodes' JVMs at once: a start is seconds
            self.kafka_data_of(k).mkdir(parents=True, exist_ok=True)
            argv = self._java_argv(
                "kafka.tools.StorageTool",
                "format",
                *standalone,
                # One argument: an id may start with "-", which would read as an option.
                f"--cluster-id={cluster_id}",
                "--config",
                str(self.kafka_config_of(k)),
                *scram,
            )
            formats.append(
                subprocess.Popen(
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    text=True,
                )
            )
        for proc in formats:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise ProcessError(f"kafka storage format failed:\n{out}")

    def _check_port_free(self, name: str, ports: Iterable[int]) -> None:
        busy = [p for p in ports if port_open(p)]
        if busy:
            raise ProcessError(
                f"cannot start {name}: port(s) {busy} on 127.0.0.1 already in use by another "
                "process (another stack? set other ports or stop it)"
            )

    def _spawn_kafka(self, k: int = 0) -> None:
        client, controller = self.ports.kafka_nodes[k]
        name = broker_name(k)
        self._check_port_free(name, [client, controller])
        argv = self._java_argv("kafka.Kafka", str(self.kafka_config_of(k)))
        self.supervisor.start(name, argv, ready=client, wait=False)

    def _spawn_ferretdb(
        self, name: str = FERRETDB, port: int = 0, flags: tuple[str, ...] = (), wait: bool = False
    ) -> None:
        port = port or self.ports.mongodb
        self._check_port_free(name, [port])
        data = self.run_dir / "data" / name
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            str(tools.path("ferretdb")),
            "--handler=postgresql",
            f"--state-dir={data}",
            f"--listen-addr=127.0.0.1:{port}",
            "--debug-addr=-",  # no metrics/pprof port: it would clash between stacks
            "--telemetry=disable",
            "--log-level=warn",  # errors and warnings, not every connection's start and end
            *flags,
        ]
        env = {
            # A URL with no usable login (stack.postgres): clients bring their own credentials.
            "FERRETDB_POSTGRESQL_URL": self.postgres.ferretdb_url(),
            # Collect garbage when the heap has tripled, not doubled: the collector took 11% of
            # FerretDB's CPU under UpdateCustomer at 100/s, on a heap of tens of MB.
            "GOGC": "200",
        }
        self.supervisor.start(name, argv, env=env, ready=port, wait=wait)

    def start_ferretdb_twin(self, name: str, port: int, *flags: str) -> str:
        """A second FerretDB on the same PostgreSQL database, started with ``flags`` (tests
        compare it with the first, e.g. with ``--test-disable-pushdown``); returns its
        MongoDB URI, as the tests' role (it requires credentials like the first). Stopped with
        the stack, or by ``supervisor.stop(name)``."""
        self._spawn_ferretdb(name, port, flags, wait=True)
        return self.mongodb_uri_as(TOOLING_ROLE, port=port)
