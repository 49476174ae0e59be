"""Card key configuration and the stored card's view: pure rules, no database."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from bson.binary import Binary

from accounts_svc import cards
from accounts_svc.cards import CardKeyConfig, CardKeyError
from stack import cardkeys


def local_env(tmp_path: Path, master: bytes | None = None, fp: bytes | None = None) -> dict[str, str]:
    (tmp_path / "m").write_bytes(base64.b64encode(os.urandom(96) if master is None else master))
    (tmp_path / "f").write_bytes(os.urandom(32) if fp is None else fp)
    return {
        "CARD_LOCAL_MASTER_KEY_FILE": str(tmp_path / "m"),
        "CARD_FINGERPRINT_KEY_FILE": str(tmp_path / "f"),
    }


def test_local_keys_from_files_raw_or_base64(tmp_path: Path) -> None:
    config = CardKeyConfig.from_env("accounts", local_env(tmp_path))
    assert config.provider == "local" and len(config.kms_providers["local"]["key"]) == 96
    assert config.key_vault_namespace == "accounts.__keyVault"
    assert len(config.fingerprint_key) == 32
    shown = repr(config)  # secrets stay out of reprs, and so out of logs
    assert "kms_providers" not in shown and "fingerprint_key" not in shown


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"CARD_LOCAL_MASTER_KEY_FILE": ""}, "CARD_LOCAL_MASTER_KEY_FILE is not configured"),
        ({"CARD_LOCAL_MASTER_KEY_FILE": "/nonexistent/k"}, "cannot read /nonexistent/k"),
        ({"CARD_FINGERPRINT_KEY_FILE": ""}, "CARD_FINGERPRINT_KEY_FILE is not configured"),
        ({"CARD_KMS_PROVIDER": "vault"}, "is not one of local, aws"),
        ({"CARD_KMS_PROVIDER": "aws"}, "CARD_KMS_PROVIDERS has no credentials for 'aws'"),
        (
            {"CARD_KMS_PROVIDER": "aws", "CARD_KMS_PROVIDERS": '{"aws": {}}'},
            "CARD_MASTER_KEY is required",
        ),
        ({"CARD_KMS_PROVIDERS": "{not json"}, "CARD_KMS_PROVIDERS is not JSON"),
        ({"CARD_KEY_VAULT_NAMESPACE": "novault"}, "is not <db>.<collection>"),
    ],
)
def test_bad_configuration_is_refused_saying_what(
    tmp_path: Path, change: dict[str, str], says: str
) -> None:
    with pytest.raises(CardKeyError, match=says):
        CardKeyConfig.from_env("accounts", {**local_env(tmp_path), **change})


def test_short_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CardKeyError, match="96 bytes"):
        CardKeyConfig.from_env("accounts", local_env(tmp_path, master=os.urandom(64)))
    with pytest.raises(CardKeyError, match="at least 32 bytes"):
        CardKeyConfig.from_env("accounts", local_env(tmp_path, fp=b"short"))


def test_a_kms_provider_by_configuration(tmp_path: Path) -> None:
    env = {
        "CARD_KMS_PROVIDER": "aws",
        "CARD_KMS_PROVIDERS": '{"aws": {}}',
        "CARD_MASTER_KEY": '{"region": "eu-west-1", "key": "arn:aws:kms:eu-west-1:1:key/k"}',
        "CARD_FINGERPRINT_KEY_FILE": local_env(tmp_path)["CARD_FINGERPRINT_KEY_FILE"],
    }
    config = CardKeyConfig.from_env("accounts", env)
    assert config.provider == "aws" and "local" not in config.kms_providers
    assert config.master_key == {"region": "eu-west-1", "key": "arn:aws:kms:eu-west-1:1:key/k"}


def test_run_dir_keys_are_private_and_made_once(tmp_path: Path) -> None:
    env = cardkeys.env_for(tmp_path, {})
    master = Path(env["CARD_LOCAL_MASTER_KEY_FILE"])
    assert stat.S_IMODE(master.stat().st_mode) == 0o600
    first = master.read_bytes()
    assert cardkeys.env_for(tmp_path, {}) == env and master.read_bytes() == first
    assert CardKeyConfig.from_env("accounts", env).kms_providers["local"]["key"] == (
        base64.b64decode(first)
    )
    configured = {"CARD_KMS_PROVIDER": "gcp", "PATH": "/bin"}
    assert cardkeys.env_for(tmp_path / "other", configured) == {"CARD_KMS_PROVIDER": "gcp"}
    assert not (tmp_path / "other").exists()


def test_view_masks_without_decrypting_and_names_the_card() -> None:
    key = Binary(os.urandom(16), 4)
    stored = {
        "type": "CREDIT_CARD_TYPE_PRIMARY",
        cards.CIPHERTEXT: Binary(b"\x02" + os.urandom(40), 6),
        cards.KEY_ID: key,
        cards.LAST4: "4242",
        cards.LENGTH: 16,
        cards.FINGERPRINT: "ab" * 32,
        cards.CARD_ID: "cd" * 12,
    }
    assert cards.view(stored) == {
        "type": "CREDIT_CARD_TYPE_PRIMARY",
        "number": "************4242",
        "card_id": "cd" * 12,
    }
    assert not cards.needs_reseal(stored, key)
    assert cards.needs_reseal({k: v for k, v in stored.items() if k != cards.CARD_ID}, key)
    assert cards.needs_reseal(stored, Binary(os.urandom(16), 4))
    assert cards.needs_reseal({"number": "4111111111111111"}, key)


def test_fingerprint_is_keyed() -> None:
    a, b = os.urandom(32), os.urandom(32)
    assert cards.fingerprint(a, "4111111111111111") == cards.fingerprint(a, "4111111111111111")
    assert cards.fingerprint(a, "4111111111111111") != cards.fingerprint(b, "4111111111111111")
    assert cards.fingerprint(a, "4111111111111111") != cards.fingerprint(a, "4111111111111112")
