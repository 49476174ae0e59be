"""Where the running system is: environment first, then `.run/stack.env` written
by `make up` / `storefront run`, then the embedded defaults. The services' gRPC targets
(where the CLI calls their admin service) default to `storefront run`'s ports;
`STOREFRONT_<SERVICE>_GRPC=host:port` points elsewhere (e.g. a port-forward)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stack import tools
from storefront_cli import system

RUN_DIR = tools.REPO_ROOT / ".run"
SERVICES = system.SERVICES


def default_targets() -> dict[str, str]:
    return {s: system.grpc_target(system.SystemPorts(), s) for s in SERVICES}


@dataclass(frozen=True)
class Endpoints:
    kafka: str
    mongodb: str
    db_prefix: str = ""
    grpc: Mapping[str, str] = field(default_factory=default_targets)

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
    targets = {f"STOREFRONT_{s.upper()}_GRPC": s for s in SERVICES}
    values.update(
        {
            k: v
            for k, v in os.environ.items()
            if k in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URI", *targets)
        }
    )
    return Endpoints(
        kafka=values.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        mongodb=values.get("MONGODB_URI", "mongodb://127.0.0.1:27017/"),
        db_prefix=db_prefix
        if db_prefix is not None
        else os.environ.get("STOREFRONT_DB_PREFIX", ""),
        grpc={**default_targets(), **{s: values[k] for k, s in targets.items() if k in values}},
    )
