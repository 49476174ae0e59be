"""A local Prometheus scraping every service of the topology and Envoy, under the stack's
Supervisor.

Why: `make run` should show the system's metrics the way production does, with no Docker.
Prometheus comes from Debian (`apt-get install prometheus`, the binary /usr/bin/prometheus);
the package's own service is never used (there is no systemd here, and it would scrape the
wrong things), we run the binary with a config rendered from ``prometheus.yml.tmpl`` into the
run dir::

    <run_dir>/config/<name>.yml     the rendered config
    <run_dir>/config/<name>-rules.yml  the alert rules of istio/storefront/alerts.yaml, the
                                    same groups the cluster's PrometheusRule holds
    <run_dir>/data/<name>/          its TSDB
    <run_dir>/logs/<name>.log       its output (see stack.procs)

Use::

    ensure_installed()                                   # apt-get only if the binary is missing
    url = start_prometheus(stack, ports)                 # http://127.0.0.1:9090
    stack.supervisor.stop("prometheus")
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from string import Template
from typing import Protocol

import yaml

from stack.embedded import EmbeddedStack
from stack.tools import REPO_ROOT, apt_install
from topology import SYSTEM, System

PROMETHEUS = "prometheus"
"""Default Supervisor name of the Prometheus process."""
DEFAULT_PORT = 9090
TEMPLATE = Path(__file__).resolve().parent / "prometheus.yml.tmpl"
ALERTS = REPO_ROOT / "istio" / "storefront" / "alerts.yaml"
"""The PrometheusRule deployed with the services; its groups are the local rules too."""
APT_PACKAGE = "prometheus"

Log = Callable[[str], None]


class ScrapePorts(Protocol):
    """Where the targets listen (storefront_cli.system.SystemPorts fits)."""

    @property
    def envoy_admin(self) -> int: ...

    def metrics(self, process: str) -> int: ...

    def instances(self, service: str) -> tuple[str, ...]: ...


def binary() -> Path | None:
    """The Prometheus binary: $STOREFRONT_PROMETHEUS, else `prometheus` on PATH (Debian's)."""
    override = os.environ.get("STOREFRONT_PROMETHEUS")
    if override:
        return Path(override) if Path(override).exists() else None
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    return Path(found) if found else None


def ensure_installed(log: Log = print) -> bool:
    """Install Debian's prometheus package unless the binary is there; True if it installed."""
    return apt_install(APT_PACKAGE, lambda: binary() is not None, log)


def render_rules(path: Path) -> Path:
    """A Prometheus rules file with the PrometheusRule's groups (JSON is YAML)."""
    rule = yaml.safe_load(ALERTS.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"groups": rule["spec"]["groups"]}, indent=1))
    return path


def service_targets(
    ports: ScrapePorts, namespace: str, system: System = SYSTEM
) -> list[dict[str, object]]:
    """A static target group per service, one target per replica, labelled as Kubernetes
    labels its pods (JSON is YAML)."""
    return [
        {
            "targets": [f"127.0.0.1:{ports.metrics(p)}" for p in ports.instances(s.name)],
            "labels": {"app": s.name, "namespace": namespace},
        }
        for s in system
    ]


def render_config(
    path: Path,
    ports: ScrapePorts,
    *,
    prometheus_port: int = DEFAULT_PORT,
    scrape_interval: str = "5s",
    namespace: str = "storefront",
    system: System = SYSTEM,
) -> Path:
    """Write the scrape config for these ports, and the alert rules beside it; `namespace`
    mirrors the Kubernetes label."""
    rules = render_rules(path.with_name(f"{path.stem}-rules.yml"))
    text = Template(TEMPLATE.read_text()).substitute(
        rules=json.dumps(str(rules)),
        scrape_interval=scrape_interval,
        scrape_timeout=scrape_interval,
        namespace=namespace,
        service_targets=json.dumps(service_targets(ports, namespace, system)),
        envoy_admin=ports.envoy_admin,
        prometheus=prometheus_port,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def http_ready(url: str) -> bool:
    """True once `url` answers 200 (Prometheus' /-/ready is 503 while the TSDB loads)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_prometheus(
    stack: EmbeddedStack,
    ports: ScrapePorts,
    *,
    port: int = DEFAULT_PORT,
    name: str = PROMETHEUS,
    scrape_interval: str = "5s",
    timeout: float = 60.0,
    log: Log = print,
) -> str:
    """Start Prometheus under the stack's Supervisor (installing it if needed); its URL."""
    ensure_installed(log)
    exe = binary()
    assert exe is not None
    config = render_config(
        stack.run_dir / "config" / f"{name}.yml",
        ports,
        prometheus_port=port,
        scrape_interval=scrape_interval,
    )
    data = stack.run_dir / "data" / name
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        str(exe),
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=2d",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    stack.supervisor.start(name, argv, ready=port, timeout=timeout)
    remaining = max(5.0, timeout - (time.monotonic() - started))
    stack.supervisor.wait_ready(name, lambda: http_ready(f"{url}/-/ready"), remaining)
    return url
