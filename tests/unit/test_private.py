"""Secrets are private from the moment they exist (stack.private), initdb's password file
included, and no password reaches a command line or the env file."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack import postgres
from stack.postgres import PostgresCluster
from stack.private import create_private, password_file, private_dir
from stack.procs import Supervisor


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_dir_makes_every_missing_parent_private(tmp_path: Path) -> None:
    private_dir(tmp_path / "secrets" / "kafka")
    assert mode(tmp_path / "secrets") == 0o700
    assert mode(tmp_path / "secrets" / "kafka") == 0o700


def test_private_dir_closes_an_open_one(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir(mode=0o755)
    private_dir(tmp_path / "secrets")
    assert mode(tmp_path / "secrets") == 0o700


def test_password_files_are_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "mongodb" / "orders.password"
    first = password_file(path)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert password_file(path) == first and len(first) >= 32
    create_private(path, b"another\n")  # a second creator never overwrites
    assert password_file(path) == first


def test_initdb_reads_its_password_from_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, int] = {}

    def fake_run(self: PostgresCluster, argv: list[str], what: str) -> str:
        [pwfile] = [a.split("=", 1)[1] for a in argv if a.startswith("--pwfile=")]
        seen["mode"] = mode(Path(pwfile))
        assert not [a for a in argv if self.password in a]
        return ""

    monkeypatch.setattr(PostgresCluster, "_run", fake_run)
    monkeypatch.setattr(postgres.tools, "path", lambda name: Path("/nonexistent") / name)
    cluster = PostgresCluster(tmp_path, 5999, Supervisor(tmp_path))
    cluster._os_user = None
    cluster.init()
    assert seen["mode"] == 0o600
    assert mode(tmp_path / "secrets") == 0o700
    assert not list((tmp_path / "data").glob("*.initdb"))


def test_ferretdb_url_carries_no_usable_login() -> None:
    cluster = PostgresCluster(Path("/nonexistent"), 5999, Supervisor(Path("/nonexistent")))
    url = cluster.ferretdb_url()
    assert url.startswith(f"postgres://{postgres.ANONYMOUS}@127.0.0.1:5999/")
    assert ":" not in url.split("//", 1)[1].split("@", 1)[0]


def test_roles_sql_gives_services_no_superuser() -> None:
    sql = postgres.roles_sql({"orders": "pw'd"})
    assert "PASSWORD 'pw''d'" in sql
    assert "ALTER ROLE orders LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE" in sql
