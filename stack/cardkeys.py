"""The local card keys: a running stack keeps the master key of its card encryption in its
run dir, never in the repository.

`storefront run` (and the test and bench fixtures) create, once, a 96-byte master key for
MongoDB's `local` KMS provider and a separate 32-byte key for card fingerprints, both base64 in
`<run dir>/secrets/` (mode 0600), and point accounts_svc and `storefront keys` at them. A real
deployment sets CARD_KMS_PROVIDER (aws, gcp, azure, kmip) and its settings instead, and then
nothing is generated (docs/security.md).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path

from stack.private import create_private, private_dir

MASTER_KEY_FILE = "card-master.key"
FINGERPRINT_KEY_FILE = "card-fingerprint.key"
MASTER_KEY_BYTES = 96
FINGERPRINT_KEY_BYTES = 32


def _ensure(path: Path, size: int) -> None:
    if not path.exists():
        create_private(path, base64.b64encode(os.urandom(size)) + b"\n")


def env_for(
    run_dir: Path | str, environ: Mapping[str, str] = os.environ, *, create: bool = True
) -> dict[str, str]:
    """CARD_* variables for the run dir's local keys (created on first use unless `create` is
    False), unless the environment already configures card keys of its own."""
    if any(k.startswith("CARD_") for k in environ):
        return {k: v for k, v in environ.items() if k.startswith("CARD_")}
    secrets = Path(run_dir) / "secrets"
    master, fingerprint = secrets / MASTER_KEY_FILE, secrets / FINGERPRINT_KEY_FILE
    if create:
        private_dir(secrets)
        _ensure(master, MASTER_KEY_BYTES)
        _ensure(fingerprint, FINGERPRINT_KEY_BYTES)
    return {
        "CARD_KMS_PROVIDER": "local",
        "CARD_LOCAL_MASTER_KEY_FILE": str(master.resolve()),
        "CARD_FINGERPRINT_KEY_FILE": str(fingerprint.resolve()),
    }
