"""Every environment variable is documented, and a bad value stops a process naming it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from storefront_cli.main import main as storefront
from svckit import mongo
from svckit.envvars import ConfigError
from svckit.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"
SOURCES = ("svckit", "accounts_svc", "orders_svc", "fulfillment_svc", "storefront_cli", "stack",
           "envoy_config", "tests", "bench", "tools", "istio")

# How the code reads a variable: env.get("X"), os.environ["X"], envvars.integer(env, "X", ...),
# "X" in os.environ, and a module constant naming one (CORS_ORIGINS_ENV = "X").
_READS = [
    re.compile(r'(?:environ|env)(?:\.get)?\(\s*"([A-Z][A-Z0-9_]{2,})"'),
    re.compile(r'(?:environ|env)\["([A-Z][A-Z0-9_]{2,})"\]'),
    re.compile(r'envvars\.\w+\(\s*[\w.]+,\s*"([A-Z][A-Z0-9_]{2,})"'),
    re.compile(r'"([A-Z][A-Z0-9_]{2,})" in (?:os\.)?environ'),
    re.compile(r'_ENV = "([A-Z][A-Z0-9_]{2,})"'),
]


def variables_read() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for top in SOURCES:
        for path in (REPO / top).rglob("*.py"):
            if path.name == Path(__file__).name:
                continue
            text = path.read_text()
            for pattern in _READS:
                for name in pattern.findall(text):
                    found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_variable_the_code_reads_is_documented() -> None:
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]{2,})`", DOC.read_text()))
    read = variables_read()
    assert {"GRPC_PORT", "SHUTDOWN_GRACE_SECONDS", "OUTBOX_RELAY"} <= read.keys()  # the scan works
    missing = {name: sorted(where) for name, where in read.items() if name not in documented}
    assert not missing, f"read but not in docs/configuration.md: {missing}"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("GRPC_PORT", "abc", "not a whole number"),
        ("GRPC_PORT", "70000", "above its maximum"),
        ("METRICS_PORT", "-1", "below its minimum"),
        ("SHUTDOWN_GRACE_SECONDS", "soon", "not a number"),
        ("SHUTDOWN_GRACE_SECONDS", "nan", "not a finite number"),
        ("GRPC_MAX_MESSAGE_BYTES", "4MB", "not a whole number"),
        ("LOG_LEVEL", "LOUD", "not one of"),
        ("OUTBOX_RELAY", "maybe", "not one of"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS", "not one of"),
        ("AUTH_LEEWAY_SECONDS", "-5", "below its minimum"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str, says: str) -> None:
    env = {name: value}
    if name.startswith("AUTH_"):
        env |= {"AUTH_ISSUER": "i", "AUTH_AUDIENCE": "a", "AUTH_JWKS_URI": "/jwks.json"}
    with pytest.raises(ConfigError, match=name) as caught:
        Settings.from_env("orders", grpc_port=50052, metrics_port=9465, admin_port=50062, env=env)
    assert says in str(caught.value)


def test_good_values_are_read() -> None:
    env = {
        "GRPC_PORT": "6000",
        "METRICS_PORT": " 6001 ",
        "SHUTDOWN_GRACE_SECONDS": "2.5",
        "LOG_LEVEL": "debug",
        "OUTBOX_RELAY": "OFF",
        "GRPC_MAX_MESSAGE_BYTES": "",
    }
    settings = Settings.from_env("orders", grpc_port=50052, metrics_port=9465, admin_port=50062, env=env)
    assert (settings.grpc_port, settings.metrics_port) == (6000, 6001)
    assert settings.shutdown_grace_seconds == 2.5
    assert settings.log_level == "DEBUG"
    assert settings.outbox_relay_enabled is False
    assert settings.max_message_bytes == 4 * 1024 * 1024  # empty counts as unset


def test_mongodb_pool_size_is_checked_when_a_client_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGODB_MAX_POOL_SIZE", "0")
    with pytest.raises(ConfigError, match="MONGODB_MAX_POOL_SIZE"):
        mongo.connect("mongodb://127.0.0.1:1/")


def test_a_service_with_a_bad_value_exits_2_with_one_line_naming_it() -> None:
    env = {**os.environ, "GRPC_PORT": "abc"}
    result = subprocess.run(
        [sys.executable, "-m", "orders_svc"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [line["message"] for line in lines] == [
        "refusing to start: GRPC_PORT='abc' is not a whole number"
    ]
    assert "Traceback" not in result.stderr


def test_the_cli_with_a_bad_value_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "TLS")
    assert storefront(["status"]) == 2
    assert "KAFKA_SECURITY_PROTOCOL" in capsys.readouterr().err
