"""Writes the env files kustomize turns into each MongoDB's Secret, with fresh random passwords.

    uv run python istio/gen_secrets.py          # create the files that are missing
    uv run python istio/gen_secrets.py --force  # new passwords for all (a new cluster only:
                                                # MongoDB keeps the ones it was initialised with)

The files, ``istio/storefront/secrets/<service>-mongodb.env`` (0600), are git-ignored: no
password is ever committed. For production, write them from your secret store instead, or
replace the ``secretGenerator`` with External Secrets (docs/deploy.md); the keys are what the
MongoDB image and the services read. Kafka needs none: Strimzi generates the KafkaUsers'
passwords.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

SERVICES = ("accounts", "orders", "fulfillment", "catalog")
SECRETS_DIR = Path(__file__).resolve().parent / "storefront" / "secrets"


def env_file(service: str) -> Path:
    return SECRETS_DIR / f"{service}-mongodb.env"


def values(service: str) -> dict[str, str]:
    """What the mongo image (root user, the init script's service user) and the service read."""
    root, app = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    host = f"{service}-mongodb:27017"
    return {
        "MONGO_INITDB_ROOT_USERNAME": "root",
        "MONGO_INITDB_ROOT_PASSWORD": root,
        "MONGODB_APP_USERNAME": service,
        "MONGODB_APP_PASSWORD": app,
        "MONGODB_URI": f"mongodb://{service}:{app}@{host}/{service}?authSource={service}",
    }


def write(force: bool = False) -> list[Path]:
    """Create the missing env files (all with `force`); returns the ones written."""
    SECRETS_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for service in SERVICES:
        path = env_file(service)
        if path.exists() and not force:
            continue
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text("".join(f"{k}={v}\n" for k, v in values(service).items()))
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="replace existing files")
    for path in write(parser.parse_args().force):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
