"""Files and directories only their owner may read, private from their first moment.

A run dir's secrets (database and Kafka passwords, the token signing key, the card keys) are
created with their final mode by the call that creates them (``os.open``/``os.mkdir`` with a
mode), never made and then chmod-ed: between the two another local user could open them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` and every missing parent made 0700 (``Path.mkdir(parents=True)`` gives the
    parents the default 0755); an existing ``path`` more open than that is closed."""
    missing = []
    for parent in [path, *path.parents]:
        if parent.exists():
            break
        missing.append(parent)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, DIR_MODE)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, mode & ~0o077)  # a run dir from before this rule
    return path


def create_private(path: Path, data: bytes) -> None:
    """Owner-only from the first byte, and whole or not at all; if another process made
    the file first, its content stays."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    try:
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink()


def password_file(path: Path) -> str:
    """The password kept in ``path``, generated (URL-safe, 192 bits) the first time."""
    if not path.exists():
        private_dir(path.parent)
        create_private(path, secrets.token_urlsafe(24).encode() + b"\n")
    return path.read_text().strip()
