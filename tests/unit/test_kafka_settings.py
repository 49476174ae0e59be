"""KAFKA_* settings (svckit.kafka): read once, contradictions refused, one constructor."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from svckit.kafka import KafkaConnection, KafkaSettingsError

ROOT = Path(__file__).resolve().parents[2]


def test_nothing_set_is_plaintext_to_the_local_broker() -> None:
    kafka = KafkaConnection.from_env({})
    assert kafka.options() == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_scram_with_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "k1:9093,k2:9093",
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_USERNAME": "orders",
        "KAFKA_SASL_PASSWORD_FILE": str(secret),
    }
    kafka = KafkaConnection.from_env(env)
    opts = kafka.options()
    assert opts["security_protocol"] == "SASL_SSL"
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (opts["sasl_plain_username"], opts["sasl_plain_password"]) == ("orders", "s3cret")
    assert opts["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert opts["ssl_context"].check_hostname
    # A child process gets the file, never the password itself; and the secret is not shown.
    assert kafka.env()["KAFKA_SASL_PASSWORD_FILE"] == str(secret)
    assert "s3cret" not in repr(kafka) and "s3cret" not in str(kafka.env())


@pytest.mark.parametrize(
    "env",
    [
        {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "x"},
        {"KAFKA_SASL_USERNAME": "x", "KAFKA_SASL_PASSWORD": "y"},
        {"KAFKA_SECURITY_PROTOCOL": "TLS"},
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "GSSAPI",
            "KAFKA_SASL_USERNAME": "x",
            "KAFKA_SASL_PASSWORD": "y",
        },
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_USERNAME": "x",
            "KAFKA_SASL_PASSWORD": "y",
            "KAFKA_SASL_PASSWORD_FILE": "/nonexistent",
        },
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_USERNAME": "x",
            "KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw",
        },
    ],
)
def test_contradictory_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(KafkaSettingsError):
        KafkaConnection.from_env(env)


def test_only_svckit_kafka_constructs_kafka_clients() -> None:
    """Every client takes the shared settings: a new aiokafka constructor call elsewhere
    would connect without them (PLAINTEXT, anonymous) and be refused by the broker."""
    call = re.compile(r"\bAIOKafka(Consumer|Producer|AdminClient|Client)\(")
    offenders = [
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*.py")
        if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)
        and path.relative_to(ROOT) != Path("svckit/kafka.py")
        and path.relative_to(ROOT) != Path(__file__).relative_to(ROOT)
        and call.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
