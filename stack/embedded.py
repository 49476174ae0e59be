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
from dataclasses import asdict, dataclass
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
"""Supervisor name of the Kafka broker process."""
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

    @classmethod
    def free(cls) -> Ports:
        """Currently unused ports, so a test stack never clashes with ``make up``."""
        kafka, controller, mongodb, postgres = free_ports(4)
        return cls(kafka=kafka, kafka_controller=controller, mongodb=mongodb, postgres=postgres)


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
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.state_file = self.run_dir / "stack.json"
        self.ports = ports or self._saved_ports() or Ports()
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
        """Bootstrap servers for Kafka clients (external one if configured)."""
        return self.external_kafka or f"127.0.0.1:{self.ports.kafka}"

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
        kafka_ok = bool(self.external_kafka) or self.supervisor.is_running(KAFKA)
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
        running = [n for n in (KAFKA, POSTGRES, FERRETDB) if self.supervisor.is_running(n)]
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
            if not self.external_kafka and not self.supervisor.is_running(KAFKA):
                self._step("kafka format", self._format_kafka)
                self._step("kafka spawn", self._spawn_kafka)
                started.append(KAFKA)
                waits.append((KAFKA, self.ports.kafka))
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
        except (FileNotFoundError, KeyError, TypeError, json.JSONDecodeError):
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
        """Kafka's log/metadata directory."""
        return self.run_dir / "data" / "kafka"

    @property
    def kafka_config(self) -> Path:
        """The generated ``server.properties``."""
        return self.run_dir / "config" / "kafka.properties"

    def _kafka_properties(self) -> str:
        p = self.ports
        settings = {
            # One process is both the only broker and the only (standalone) KRaft controller.
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{p.kafka_controller}",
            "listeners": f"CLIENT://127.0.0.1:{p.kafka},CONTROLLER://127.0.0.1:{p.kafka_controller}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{p.kafka}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "CLIENT",
            "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT",
            **self.kafka_credentials.broker_properties("CLIENT"),
            "log.dirs": str(self.kafka_data),
            # Single node: internal topics cannot have more than one replica.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
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
        """Write the config and, on first use only, format the storage as a standalone quorum
        with every user's SCRAM credential."""
        formatted = (self.kafka_data / "meta.properties").exists()
        if formatted and not self.kafka_credentials.exist():
            raise ProcessError(
                f"{self.kafka_data} was formatted before Kafka had users and ACLs (or its "
                f"passwords in {self.kafka_credentials.dir} are gone); remove it to start "
                "afresh (its topics' records are lost, the databases are kept)"
            )
        self.kafka_credentials.create()
        self.kafka_config.parent.mkdir(parents=True, exist_ok=True)
        self.kafka_config.touch(mode=0o600)
        self.kafka_config.chmod(0o600)
        self.kafka_config.write_text(self._kafka_properties())
        if formatted:
            return
        self.kafka_data.mkdir(parents=True, exist_ok=True)
        argv = self._java_argv(
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            # One argument: an id may start with "-", which would read as an option.
            f"--cluster-id={_kafka_cluster_id()}",
            "--config",
            str(self.kafka_config),
            *self.kafka_credentials.format_args(),
        )
        res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise ProcessError(f"kafka storage format failed:\n{res.stdout}{res.stderr}")

    def _check_port_free(self, name: str, ports: Iterable[int]) -> None:
        busy = [p for p in ports if port_open(p)]
        if busy:
            raise ProcessError(
                f"cannot start {name}: port(s) {busy} on 127.0.0.1 already in use by another "
                "process (another stack? set other ports or stop it)"
            )

    def _spawn_kafka(self) -> None:
        self._check_port_free(KAFKA, [self.ports.kafka, self.ports.kafka_controller])
        argv = self._java_argv("kafka.Kafka", str(self.kafka_config))
        self.supervisor.start(KAFKA, argv, ready=self.ports.kafka, wait=False)

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
        # A URL with no usable login (stack.postgres): clients bring their own credentials.
        env = {"FERRETDB_POSTGRESQL_URL": self.postgres.ferretdb_url()}
        self.supervisor.start(name, argv, env=env, ready=port, wait=wait)

    def start_ferretdb_twin(self, name: str, port: int, *flags: str) -> str:
        """A second FerretDB on the same PostgreSQL database, started with ``flags`` (tests
        compare it with the first, e.g. with ``--test-disable-pushdown``); returns its
        MongoDB URI, as the tests' role (it requires credentials like the first). Stopped with
        the stack, or by ``supervisor.stop(name)``."""
        self._spawn_ferretdb(name, port, flags, wait=True)
        return self.mongodb_uri_as(TOOLING_ROLE, port=port)
