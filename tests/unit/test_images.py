"""The container engine's settings and the `podman run` of a service (stack/images.py)."""

from __future__ import annotations

import resource
import tomllib
from pathlib import Path

from stack import images


def test_engine_uses_runc_host_network_and_ulimits_within_the_hard_limits() -> None:
    conf = tomllib.loads(images.containers_conf())
    assert conf["engine"]["runtime"] == "runc"  # crun refuses this machine's cgroups
    assert conf["containers"]["netns"] == "host"  # the embedded stack listens on loopback
    limits = dict(u.split("=") for u in conf["containers"]["default_ulimits"])
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for name, kind, cap in (
        ("nofile", resource.RLIMIT_NOFILE, None),
        ("nproc", resource.RLIMIT_NPROC, pid_max),
    ):
        soft, hard = (int(v) for v in limits[name].split(":"))
        assert soft == hard
        _, machine_hard = resource.getrlimit(kind)
        if machine_hard != resource.RLIM_INFINITY:
            assert hard <= machine_hard
        if cap is not None:
            assert hard <= cap


def test_run_passes_the_environment_by_name_only() -> None:
    """Values (passwords among them) come from podman's environment, not its command line."""
    argv = images.run_argv(
        "c1", "accounts", ["MONGODB_URI", "KAFKA_SASL_PASSWORD"], mounts=[Path("/run/x")]
    )
    assert "--env=MONGODB_URI" in argv and "--env=KAFKA_SASL_PASSWORD" in argv
    assert not [a for a in argv if a.startswith("--env=") and "=" in a[len("--env=") :]]
    assert "--volume=/run/x:/run/x:ro" in argv and "--network=host" in argv
    assert argv[-1] == images.image("accounts")


def test_podman_reads_the_private_configuration() -> None:
    assert images.podman_env({"A": "1"})["CONTAINERS_CONF"] == str(images.CONTAINERS_CONF)
