"""The services' container images, built from the root ``Dockerfile`` with podman and run on
this machine (the tests' ``tests/images``).

Why this way: no image registry is reachable here, so the base image is made from Debian's
packages with ``debootstrap`` and imported (``podman import``); the Dockerfile takes it as its
``PYTHON_IMAGE``. Debian's podman runs with ``runc`` (``crun`` refuses this machine's cgroup
layout), default ulimits no higher than the hard limits (root cannot raise them here) and the
host's network, so the containers reach the embedded stack on loopback. All of it is set in a
private ``containers.conf`` (``CONTAINERS_CONF``), never in the global files.

``python -m stack install --only containers`` (part of ``make test``'s install) installs
podman, runc and debootstrap, writes that configuration and makes the base image, stamped in
``.tools/stamps/containers.json``; :func:`build` builds a service's image (podman's layer
cache makes a rebuild with unchanged code take seconds).
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from stack import tools

Log = Callable[[str], None]

CONTAINERS_DIR = tools.TOOLS_DIR / "containers"
CONTAINERS_CONF = CONTAINERS_DIR / "containers.conf"
APT_PACKAGES = ("podman", "runc", "debootstrap")
"""Debian's packages the images need: the engine, its runtime and the base image's maker."""
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "ca-certificates")
"""Beyond Debian's minimal base: the interpreter the venv links to (3.11 on bookworm) and the
CA certificates uv needs to reach PyPI at build time."""
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
"""This machine's trusted CAs (Debian's and any local one, e.g. a TLS-inspecting proxy's),
which the base image trusts too, so a build reaches PyPI wherever the host does."""
BASE_IMAGE = f"localhost/storefront-base:{BASE_SUITE}"
IMAGE_TAG = "dev"
STOP_GRACE_SECONDS = 10
"""What ``podman stop`` waits for after SIGTERM before it kills a container."""


def image(service: str) -> str:
    """The local image name of a service."""
    return f"localhost/storefront-{service}:{IMAGE_TAG}"


def _limit(kind: int) -> str:
    """A ulimit spec at the hard limit, which a container may not exceed; for processes at
    most pid_max too (this machine refuses any higher RLIMIT_NPROC to a container)."""
    _soft, hard = resource.getrlimit(kind)
    value = hard if hard != resource.RLIM_INFINITY else 1048576
    if kind == resource.RLIMIT_NPROC:
        value = min(value, int(Path("/proc/sys/kernel/pid_max").read_text()))
    return f"{value}:{value}"


def containers_conf() -> str:
    """The engine's settings (see the module docstring)."""
    nofile, nproc = _limit(resource.RLIMIT_NOFILE), _limit(resource.RLIMIT_NPROC)
    return (
        "# Written by stack/images.py; podman reads it through CONTAINERS_CONF.\n"
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}", "nproc={nproc}"]\n'
        'netns = "host"\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )


def podman_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a podman command: this configuration, plus ``extra``."""
    return {**os.environ, **(extra or {}), "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, timeout: float = 600.0) -> str:
    """Run ``podman args``, returning its stdout; raise :class:`tools.ToolError` on failure."""
    res = subprocess.run(
        [tools.path("podman"), *args],
        env=podman_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if res.returncode != 0:
        out = (res.stdout + res.stderr).strip()[-4000:]
        raise tools.ToolError(f"podman {' '.join(args)} failed ({res.returncode}):\n{out}")
    return res.stdout


def image_exists(name: str) -> bool:
    res = subprocess.run(
        [tools.path("podman"), "image", "exists", name],
        env=podman_env(),
        capture_output=True,
        check=False,
    )
    return res.returncode == 0


def _on_path(program: str) -> bool:
    return shutil.which(program) is not None


def _base_stamp() -> dict[str, str]:
    return {
        "suite": BASE_SUITE,
        "packages": ",".join(BASE_PACKAGES),
        "mirror": DEBIAN_MIRROR,
        "image": BASE_IMAGE,
        "ca_bundle_sha256": tools.file_digest(HOST_CA_BUNDLE) if HOST_CA_BUNDLE.exists() else "",
    }


def install(log: Log) -> bool:
    """podman, runc and debootstrap (apt), the configuration and the base image; True if
    anything was done. Needs root, as the other Debian packages of the install step."""
    did = False
    for package in APT_PACKAGES:
        did |= tools.apt_install(package, functools.partial(_on_path, package), log)
    conf = containers_conf()
    if not CONTAINERS_CONF.exists() or CONTAINERS_CONF.read_text() != conf:
        CONTAINERS_DIR.mkdir(parents=True, exist_ok=True)
        CONTAINERS_CONF.write_text(conf)
        did = True
    stamp = _base_stamp()
    if tools.stamp_ok("containers", stamp) and image_exists(BASE_IMAGE):
        return did
    make_base_image(log)
    tools.write_stamp("containers", stamp)
    return True


def make_base_image(log: Log) -> None:
    """Debian's minimal system plus :data:`BASE_PACKAGES` and the host's CA bundle, imported
    as :data:`BASE_IMAGE`."""
    if os.geteuid() != 0:
        raise tools.ToolError("the base image is made with debootstrap, which needs root")
    log(f"[install] containers: debootstrap {BASE_SUITE} into a base image (~1 min) ...")
    CONTAINERS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rootfs.", dir=CONTAINERS_DIR) as tmp:
        root = Path(tmp) / "rootfs"
        tools.run_checked(
            [
                tools.need("debootstrap"),
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                BASE_SUITE,
                str(root),
                DEBIAN_MIRROR,
            ]
        )
        if HOST_CA_BUNDLE.exists():
            shutil.copyfile(HOST_CA_BUNDLE, root / HOST_CA_BUNDLE.relative_to("/"))
        # The package cache and lists are of no use in an image.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (root / junk).glob("*"):
                if f.is_file():
                    f.unlink()
        tarball = Path(tmp) / "rootfs.tar"
        tools.run_checked(["tar", "-C", str(root), "-cf", str(tarball), "."])
        podman(
            "import",
            "--change",
            'CMD ["/bin/bash"]',
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            str(tarball),
            BASE_IMAGE,
        )


def build(service: str, log: Log) -> float:
    """Build the service's image from the root Dockerfile on the base image; seconds taken."""
    t0 = time.monotonic()
    log(f"[images] building {image(service)} ...")
    podman(
        "build",
        "--format=docker",  # keeps HEALTHCHECK, which the OCI format has no field for
        "--network=host",  # uv reaches PyPI at build time
        f"--build-arg=PYTHON_IMAGE={BASE_IMAGE}",
        f"--build-arg=SERVICE={service}",
        # RUN steps get podman's own default ulimits, not containers.conf's.
        f"--ulimit=nofile={_limit(resource.RLIMIT_NOFILE)}",
        f"--ulimit=nproc={_limit(resource.RLIMIT_NPROC)}",
        f"--tag={image(service)}",
        "--file",
        str(tools.REPO_ROOT / "Dockerfile"),
        str(tools.REPO_ROOT),
        timeout=1800.0,
    )
    took = time.monotonic() - t0
    log(f"[images] built {image(service)} in {took:.0f}s")
    return took


def run_argv(
    name: str,
    service: str,
    env_names: Sequence[str],
    *,
    mounts: Sequence[Path] = (),
    user: str | None = None,
) -> list[str]:
    """``podman run`` of a service's container in the foreground (a supervisor's child): its
    output is the process's, SIGTERM to podman reaches the service. ``env_names`` are passed
    by name only, their values taken from podman's own environment (no secret on a command
    line); each of ``mounts`` is bound read-only at the same path."""
    argv = [
        shutil.which("podman") or "podman",
        "run",
        "--replace",
        f"--name={name}",
        "--network=host",
        f"--stop-timeout={STOP_GRACE_SECONDS}",
    ]
    argv += [f"--env={n}" for n in env_names]
    argv += [f"--volume={m}:{m}:ro" for m in mounts]
    if user:
        argv.append(f"--user={user}")
    return [*argv, image(service)]


if __name__ == "__main__":  # python -m stack.images [SERVICE ...]: build images (all by default)
    import topology

    for name in sys.argv[1:] or topology.SYSTEM.names:
        build(name, log=print)
