"""The embedded database is closed to whoever has no credentials, each service reaches only
its own databases, and the run dir's secrets are private from their creation
(stack.postgres, stack.private; docs/security.md)."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from stack import tools
from stack.embedded import EmbeddedStack
from stack.postgres import OPERATOR, ROLES, SUPERUSER
from tests import leaks

pytestmark = pytest.mark.integration

Doc = dict[str, Any]


@pytest.fixture(autouse=True)
def embedded(stack: EmbeddedStack) -> None:
    if stack.external_mongodb:
        pytest.skip("MongoDB is external: its users are its own")


def client(uri: str) -> MongoClient[Doc]:
    return MongoClient(uri, serverSelectionTimeoutMS=10_000)


@pytest.fixture
def orders_db(stack: EmbeddedStack) -> Iterator[str]:
    """A database made by the orders role, holding one document."""
    name = f"orders_{uuid.uuid4().hex[:12]}"
    with client(stack.mongodb_uri_as("orders")) as orders:
        orders[name]["things"].insert_one({"_id": "secret", "address": "1 Main St"})
    yield name
    with client(stack.mongodb_uri) as tooling:
        tooling.drop_database(name)


def test_a_client_without_credentials_is_refused(stack: EmbeddedStack, orders_db: str) -> None:
    """FerretDB 1.24 gives an anonymous client the user of its own PostgreSQL URL: that user
    may not log in, so nothing is read or written."""
    with client(f"mongodb://127.0.0.1:{stack.ports.mongodb}/") as anonymous:
        with pytest.raises(OperationFailure):
            anonymous[orders_db]["things"].find_one({})
        with pytest.raises(OperationFailure):
            anonymous[orders_db]["things"].insert_one({"_id": "forged"})
        with pytest.raises(OperationFailure):
            anonymous.list_database_names()


def test_a_wrong_password_is_refused(stack: EmbeddedStack, orders_db: str) -> None:
    uri = stack.mongodb_uri_as("orders", password=False).replace("orders@", "orders:guess@")
    with client(uri) as impostor, pytest.raises(OperationFailure):
        impostor[orders_db]["things"].find_one({})


def test_a_service_reaches_only_its_own_databases(stack: EmbeddedStack, orders_db: str) -> None:
    """A leaked accounts password reads no order and pushes nothing into orders' outbox."""
    with client(stack.mongodb_uri_as("accounts")) as accounts:
        with pytest.raises(OperationFailure):
            accounts[orders_db]["things"].find_one({})
        with pytest.raises(OperationFailure):
            accounts[orders_db]["things"].update_one({"_id": "secret"}, {"$set": {"x": 1}})
    with client(stack.mongodb_uri_as("orders")) as orders:
        assert orders[orders_db]["things"].find_one({"_id": "secret"}) is not None


def test_the_operator_reads_everything_and_writes_nothing(
    stack: EmbeddedStack, orders_db: str
) -> None:
    with client(stack.mongodb_uri_as(OPERATOR)) as operator:
        assert operator[orders_db]["things"].find_one({"_id": "secret"}) is not None
        with pytest.raises(OperationFailure):
            operator[orders_db]["things"].insert_one({"_id": "forged"})
        with pytest.raises(OperationFailure):
            operator[orders_db]["things"].delete_one({"_id": "secret"})


def test_secrets_are_private(stack: EmbeddedStack) -> None:
    secrets = stack.run_dir / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for path in secrets.rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
        assert stat.S_IMODE(path.stat().st_mode) & ~expected == 0, path
    for role in ROLES:
        assert stack.mongodb_password_file(role).is_file()
    env_file = stack.write_env_file(stack.run_dir / "secrets-test.env")
    try:
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        text = env_file.read_text()
        for role in ROLES:
            assert stack.postgres.role_password(role) not in text
    finally:
        env_file.unlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another local user")
def test_another_local_user_reads_no_secret(stack: EmbeddedStack) -> None:
    """As `nobody`: the password files are out of reach even where the run dir is not, and
    PostgreSQL under FerretDB takes no login without a password."""
    nobody = pwd.getpwnam("nobody")
    target = stack.mongodb_password_file(OPERATOR)

    def as_nobody() -> None:
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    res = subprocess.run(
        ["cat", str(target)], preexec_fn=as_nobody, capture_output=True, text=True
    )
    assert res.returncode != 0 and "Permission denied" in res.stderr
    assert stack.postgres.role_password(OPERATOR) not in res.stdout
    for user in (SUPERUSER, OPERATOR, "orders"):
        psql = subprocess.run(
            [
                str(tools.path("postgresql") / "psql"),
                f"--dbname={stack.postgres.url(user=user, connect_timeout='5')}",
                "--no-password",
                "--command=SELECT 1",
            ],
            preexec_fn=as_nobody,
            capture_output=True,
            text=True,
            env={"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent"},
            cwd="/",
        )
        assert psql.returncode != 0 and "password" in psql.stderr, (user, psql.stderr)


def test_no_secret_on_any_command_line(stack: EmbeddedStack) -> None:
    """Every local user can read every process's argv: Kafka, PostgreSQL, FerretDB."""
    assert list((stack.run_dir / "secrets").rglob("*.password"))
    assert leaks.argv_leaks(stack) == []
