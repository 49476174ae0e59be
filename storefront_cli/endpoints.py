"""Where the running system is: environment first, then `.run/stack.env` written
by `make up` / `storefront run`, then the embedded defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stack import tools
from svckit.kafka import KafkaConnection

RUN_DIR = tools.REPO_ROOT / ".run"
SERVICES = ("accounts", "orders", "fulfillment")


@dataclass(frozen=True)
class Endpoints:
    kafka: KafkaConnection
    """The brokers, as the operator (stack.env) or whoever the KAFKA_* variables say."""
    mongodb: str
    db_prefix: str = ""

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
    if "MONGODB_URI" in os.environ:
        values["MONGODB_URI"] = os.environ["MONGODB_URI"]
    return Endpoints(
        kafka=KafkaConnection.from_env(kafka_values),
        mongodb=values.get("MONGODB_URI", "mongodb://127.0.0.1:27017/"),
        db_prefix=db_prefix
        if db_prefix is not None
        else os.environ.get("STOREFRONT_DB_PREFIX", ""),
    )
