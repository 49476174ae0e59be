"""Where the running system is: environment first, then `.run/stack.env` written
by `make up` / `storefront run`, then the embedded defaults. The services' gRPC targets
and their admin services' (where the CLI calls repairs and replays) default to `storefront
run`'s ports; `STOREFRONT_<SERVICE>_GRPC=host:port` and `STOREFRONT_<SERVICE>_ADMIN=host:port`
point elsewhere (e.g. a port-forward)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import topology
from stack import tools
from storefront_cli import system
from svckit import mongo
from svckit.kafka import KafkaConnection

RUN_DIR = tools.REPO_ROOT / ".run"


def default_targets() -> dict[str, str]:
    return {s: system.grpc_target(system.SystemPorts(), s) for s in topology.SYSTEM.names}


def default_admin_targets() -> dict[str, str]:
    return {s: system.admin_target(system.SystemPorts(), s) for s in topology.SYSTEM.names}


@dataclass(frozen=True)
class Endpoints:
    kafka: KafkaConnection
    """The brokers, as the operator (stack.env) or whoever the KAFKA_* variables say."""
    mongodb: str
    db_prefix: str = ""
    grpc: Mapping[str, str] = field(default_factory=default_targets)
    admin: Mapping[str, str] = field(default_factory=default_admin_targets)

    def database(self, service: str) -> str:
        return f"{self.db_prefix}{service}"


def load(run_dir: Path = RUN_DIR, *, db_prefix: str | None = None) -> Endpoints:
    values: dict[str, str] = {}
    env_file = run_dir / "stack.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
    # Kafka settings come whole from one place: a KAFKA_BOOTSTRAP_SERVERS of the environment
    # must not meet the embedded stack's user and password.
    kafka_env = {k: v for k, v in os.environ.items() if k.startswith("KAFKA_")}
    kafka_values = kafka_env if "KAFKA_BOOTSTRAP_SERVERS" in kafka_env else values
    # Likewise MONGODB_URI and the file holding its user's password (stack.env names it).
    if "MONGODB_URI" in os.environ:
        values.pop("MONGODB_PASSWORD_FILE", None)
        values.update({k: v for k, v in os.environ.items() if k.startswith("MONGODB_")})
    mongodb = values.get("MONGODB_URI", "mongodb://127.0.0.1:27017/")
    if values.get("MONGODB_PASSWORD_FILE"):
        mongodb = mongo.with_password_file(mongodb, values["MONGODB_PASSWORD_FILE"])
    # Every replica `storefront run` started in the run dir (a call balances across them).
    started = system.saved_ports(run_dir)
    if started is not None:
        values_grpc = {s: system.grpc_target(started, s) for s in topology.SYSTEM.names}
        values_admin = {s: system.admin_target(started, s) for s in topology.SYSTEM.names}
    else:
        values_grpc, values_admin = default_targets(), default_admin_targets()
    targets = {f"STOREFRONT_{s.upper()}_GRPC": s for s in topology.SYSTEM.names}
    admin = {f"STOREFRONT_{s.upper()}_ADMIN": s for s in topology.SYSTEM.names}
    values.update({k: v for k, v in os.environ.items() if k in targets or k in admin})
    return Endpoints(
        kafka=KafkaConnection.from_env(kafka_values),
        mongodb=mongodb,
        db_prefix=db_prefix
        if db_prefix is not None
        else os.environ.get("STOREFRONT_DB_PREFIX", ""),
        grpc={**values_grpc, **{s: values[k] for k, s in targets.items() if k in values}},
        admin={
            **values_admin,
            **{s: values[k] for k, s in admin.items() if k in values},
        },
    )
