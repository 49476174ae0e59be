"""Who may do what on Kafka: one SCRAM identity per service, a read-only operator, tooling
for tests and benchmarks, their ACLs, and the embedded broker's SASL settings.

The table is derived from the topology (`topology.SYSTEM`: what each service publishes and
consumes), which the services subscribe and publish by, so it cannot drift from the code;
``istio/storefront/kafka-users.yaml`` states the same grants as Strimzi KafkaUsers, and a
deploy test compares the two. docs/security.md has the table in words.

Embedded broker (:class:`stack.embedded.EmbeddedStack`): the client listener is
SASL_PLAINTEXT with SCRAM-SHA-512 only, on 127.0.0.1; the KRaft controller listener is
SASL_PLAINTEXT with PLAIN for the node's own ``broker`` identity (SCRAM credentials live in the
metadata log, which the controller serves, so it cannot authenticate its own quorum with them).
StandardAuthorizer, ``allow.everyone.if.no.acl.found=false``, ``super.users=User:broker``.
Passwords are generated per run dir into ``<run_dir>/secrets/kafka/<user>.password`` (0600);
the SCRAM credentials go into the metadata log when the storage is formatted (``--add-scram``
with salt and salted password, so no password is on a command line), and the ACLs are
synchronised with the table at every start; both persist in the metadata log across restarts.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.protocol.admin import (
    CreateAclsRequest_v1,
    DeleteAclsRequest_v1,
    DescribeAclsRequest_v1,
)
from aiokafka.protocol.api import Request

from stack.private import password_file
from svckit import names
from svckit.kafka import KafkaConnection
from svckit.names import consumer_group, dlq_topic, run_groups_prefix
from topology import SYSTEM, System

BROKER = "broker"
"""The node's own identity: inter-broker and controller traffic, and the stack's set-up."""
OPERATOR = "operator"
"""The ``storefront`` operator commands and the console: reads only."""
TOOLING = "tooling"
"""Tests, benchmarks and set-up scripts that write events or create topics; never the
operator commands or the console."""
USERS = (BROKER, *SYSTEM.names, OPERATOR, TOOLING)
MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192
"""PBKDF2 rounds per credential (Kafka's minimum is 4096); a client pays them once per
connection: 10 ms measured here (14 ms with the fault suite running)."""


class Resource(enum.IntEnum):
    """Kafka's protocol codes for ACL resource types."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4


class Pattern(enum.IntEnum):
    LITERAL = 3
    PREFIXED = 4


class Op(enum.IntEnum):
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10


ALLOW = 3
CLUSTER_NAME = "kafka-cluster"


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule for ``User:<user>`` from any host."""

    user: str
    resource: Resource
    name: str
    pattern: Pattern
    op: Op

    @property
    def principal(self) -> str:
        return f"User:{self.user}"


@dataclass(frozen=True)
class Role:
    """What one service does on Kafka, as its code says."""

    user: str
    produces: tuple[str, ...]
    consumes: tuple[str, ...]

    @property
    def group(self) -> str | None:
        """The consumer group it uses, if it consumes."""
        return consumer_group(self.user) if self.consumes else None

    def acls(self, *, runs: bool = True) -> list[Acl]:
        """Its grants; `runs` adds the groups of per-run copies of it (``<group>.<run>``,
        svckit.names.consumer_group) that tests start on the shared embedded broker."""

        def topic(name: str, *ops: Op) -> list[Acl]:
            return [Acl(self.user, Resource.TOPIC, name, Pattern.LITERAL, op) for op in ops]

        # Write (not cluster IdempotentWrite) is all an idempotent producer needs since
        # Kafka 3.0 (KIP-679); Read and Write imply Describe, which metadata requests need.
        out = [a for t in self.produces for a in topic(t, Op.WRITE, Op.DESCRIBE)]
        for t in self.consumes:
            out += topic(t, Op.READ, Op.DESCRIBE)
            # Its own DLQ of the topic: it parks there, and replays from there (svckit.dlq,
            # the admin service); another consumer's DLQ of the same topic is not its.
            out += topic(dlq_topic(t, consumer_group(self.user)), Op.READ, Op.WRITE, Op.DESCRIBE)
            # The topic's DLQ under its old name, shared before the queues were per group:
            # read only, to move its own records out (AdminService.MigrateParked).
            out += topic(names.legacy_dlq_topic(t), Op.READ, Op.DESCRIBE)
        if self.group:
            groups = [
                (self.group, Pattern.LITERAL),
                (names.dlq_replay_group(self.group), Pattern.LITERAL),
            ]
            if runs:
                groups.append((run_groups_prefix(self.user), Pattern.PREFIXED))
            out += [
                Acl(self.user, Resource.GROUP, name, pattern, op)
                for name, pattern in groups
                for op in (Op.READ, Op.DESCRIBE)
            ]
        return out


def roles(system: System = SYSTEM) -> list[Role]:
    """Each service's role: what it publishes and consumes, as the topology declares it (the
    services subscribe and publish by the same names)."""
    return [Role(s.name, s.topics, s.consumes) for s in system]


def operator_acls() -> list[Acl]:
    """The operator reads: every topic (status, watch, dlq list, the console's tail) and every
    group's committed offsets (lag, how far DLQ replays got). It writes nothing, joins no
    group and commits no offset: DLQ replays and repairs are the owning service's use cases
    (its admin service), so a leaked operator password cannot forge an event or steal a
    service's partitions."""
    topics = [
        Acl(OPERATOR, Resource.TOPIC, "*", Pattern.LITERAL, op) for op in (Op.READ, Op.DESCRIBE)
    ]
    groups = [Acl(OPERATOR, Resource.GROUP, "*", Pattern.LITERAL, Op.DESCRIBE)]
    cluster = [Acl(OPERATOR, Resource.CLUSTER, CLUSTER_NAME, Pattern.LITERAL, Op.DESCRIBE)]
    return topics + groups + cluster


def tooling_acls() -> list[Acl]:
    """Tests and benchmarks write events (as a producer of any topic would), create topics,
    and consume in groups of their own; nothing uses this identity by default. It cannot
    delete or reconfigure topics, change ACLs or the broker."""
    topics = [
        Acl(TOOLING, Resource.TOPIC, "*", Pattern.LITERAL, op)
        for op in (Op.READ, Op.WRITE, Op.DESCRIBE, Op.CREATE)
    ]
    groups = [
        Acl(TOOLING, Resource.GROUP, "*", Pattern.LITERAL, op) for op in (Op.READ, Op.DESCRIBE)
    ]
    cluster = [
        Acl(TOOLING, Resource.CLUSTER, CLUSTER_NAME, Pattern.LITERAL, op)
        for op in (Op.CREATE, Op.DESCRIBE)
    ]
    return topics + groups + cluster


def all_acls(system: System = SYSTEM) -> list[Acl]:
    """Every service's role as `system` declares it, the read-only operator and tooling."""
    tools = {*operator_acls(), *tooling_acls()}
    return sorted({a for role in roles(system) for a in role.acls()} | tools)


# --- credentials ---------------------------------------------------------------------------


class Credentials:
    """The run dir's generated Kafka passwords, one 0600 file per user."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "secrets" / "kafka"

    def file(self, user: str) -> Path:
        return self.dir / f"{user}.password"

    def exist(self) -> bool:
        return all(self.file(u).exists() for u in USERS)

    def create(self) -> None:
        """Make the missing passwords (kept across restarts: the broker has their hashes)."""
        for user in USERS:
            password_file(self.file(user))

    def password(self, user: str) -> str:
        return self.file(user).read_text().strip()

    def connection(self, bootstrap: str, user: str) -> KafkaConnection:
        """A client connection as `user` (its password read from, and passed on as, its file)."""
        path = str(self.file(user))
        return KafkaConnection(
            bootstrap_servers=bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=MECHANISM,
            username=user,
            password=self.password(user),
            password_file=path,
        )

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments that put every user's SCRAM credential into the
        bootstrap metadata: salt and salted password, so the password is on no command line."""
        args = []
        for user in USERS:
            salt = secrets.token_bytes(24)
            password = self.password(user).encode()
            salted = hashlib.pbkdf2_hmac("sha512", password, salt, SCRAM_ITERATIONS)
            b64 = base64.b64encode
            args += [
                "--add-scram",
                f"{MECHANISM}=[name={user},iterations={SCRAM_ITERATIONS},"
                f"salt={b64(salt).decode()},saltedpassword={b64(salted).decode()}]",
            ]
        return args

    def broker_properties(self, client_listener: str) -> dict[str, str]:
        """server.properties entries for SASL and the authorizer (the file is 0600: it holds
        the broker's own password)."""
        pw = self.password(BROKER)
        client = client_listener.lower()
        return {
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.{client}.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{BROKER}" password="{pw}";'
            ),
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{BROKER}" password="{pw}" user_{BROKER}="{pw}";'
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{BROKER}",
            "allow.everyone.if.no.acl.found": "false",
        }


# --- ACLs ----------------------------------------------------------------------------------

ANY = 1
"""The ANY filter value of resource type, pattern type, operation and permission."""
Rule = tuple[int, str, int, str, str, int, int]
"""(resource type, name, pattern type, principal, host, operation, permission): the wire form."""


def _rule(acl: Acl) -> Rule:
    return (acl.resource, acl.name, acl.pattern, acl.principal, "*", acl.op, ALLOW)


def rule_text(rule: Rule) -> str:
    """One line for people: ``User:orders READ TOPIC accounts.customer.change (LITERAL)``."""
    rtype, name, pattern, principal, host, op, permission = rule

    def label(kind: type[enum.IntEnum], code: int) -> str:
        return kind(code).name if code in kind._value2member_map_ else str(code)

    allow = "" if permission == ALLOW else f" permission={permission}"
    at = "" if host == "*" else f" from {host}"
    return (
        f"{principal} {label(Op, op)} {label(Resource, rtype)} {name} "
        f"({label(Pattern, pattern)}){at}{allow}"
    )


class _CreateAcls(Request[CreateAclsRequest_v1]):
    """CreateAcls (v1: pattern types) for many rules in one request. aiokafka's admin client
    has no ACL methods; its protocol module has the messages."""

    API_KEY = 30

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._rules = list(rules)

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._rules)


class _DeleteAcls(Request[DeleteAclsRequest_v1]):
    """DeleteAcls v1, one exact filter per rule."""

    API_KEY = 31

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._rules = list(rules)

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class(self._rules)


class _DescribeAllAcls(Request[DescribeAclsRequest_v1]):
    """DescribeAcls v1 matching every rule (aiokafka's builder would pick v2, which it does
    not encode as the flexible version it is)."""

    API_KEY = 29

    def build(self, request_struct_class: type[DescribeAclsRequest_v1]) -> DescribeAclsRequest_v1:
        return request_struct_class(ANY, None, ANY, None, None, ANY, ANY)


class AclError(RuntimeError):
    pass


def _raise_failed(what: str, codes: Iterable[tuple[Rule, int, str | None]]) -> None:
    failed = [f"{rule}: {code} {message}" for rule, code, message in codes if code]
    if failed:
        raise AclError(f"{what} Kafka ACLs failed:\n" + "\n".join(failed))


async def describe_acls(kafka: KafkaConnection) -> set[Rule]:
    """Every ACL on the cluster (as a user with Describe on the cluster: the super user)."""
    client = kafka.client(request_timeout_ms=15000)
    await client.bootstrap()
    try:
        return await _describe(client)
    finally:
        await client.close()


async def _describe(client: Any) -> set[Rule]:
    response = await client.send(client.get_random_node(), _DescribeAllAcls())
    if response.error_code:
        raise AclError(f"describing Kafka ACLs failed: {response.error_message}")
    return {
        (rtype, name, pattern, principal, host, op, permission)
        for rtype, name, pattern, acls in response.resources
        for principal, host, op, permission in acls
    }


async def sync_acls(kafka: KafkaConnection, acls: Sequence[Acl]) -> tuple[int, int]:
    """Make the cluster's ACLs exactly `acls` (as a super user): create what is missing,
    delete what the table no longer has. Returns (created, deleted)."""
    wanted = {_rule(a) for a in acls}
    client = kafka.client(request_timeout_ms=15000)
    await client.bootstrap()
    try:
        node = client.get_random_node()
        existing = await _describe(client)
        missing, stale = sorted(wanted - existing), sorted(existing - wanted)
        if missing:
            created = await client.send(node, _CreateAcls(missing))
            _raise_failed(
                "creating",
                ((r, c, m) for r, (c, m) in zip(missing, created.creation_responses, strict=True)),
            )
        if stale:
            deleted = await client.send(node, _DeleteAcls(stale))
            _raise_failed(
                "deleting",
                ((r, f[0], f[1]) for r, f in zip(stale, deleted.filter_responses, strict=True)),
            )
    finally:
        await client.close()
    return len(missing), len(stale)
