"""What `make run` installs (only what running needs), where tool versions are pinned (their
ecosystems' manifests), and uv's own install without pip."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from stack import tools
from storefront_cli import main
from tools import get_uv

REPO = Path(__file__).resolve().parents[2]


def make_dry_run(target: str) -> str:
    return subprocess.run(
        ["make", "-n", target], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout


def test_make_run_installs_the_run_group_only() -> None:
    commands = make_dry_run("run")
    assert "stack install" not in commands and "storefront run" in commands, commands
    installs = re.findall(r"-m stack install.*", make_dry_run("install-run"))
    assert installs == ["-m stack install --only run"]
    # `storefront run` installs what it starts: the run group, nothing more.
    with mock.patch.object(tools, "install", side_effect=SystemExit("installed")) as install:
        with pytest.raises(SystemExit):
            main.main(["run", "--run-dir", "/nonexistent/storefront-test"])
    install.assert_called_once()
    assert tuple(install.call_args.args[0]) == tools.RUN
    assert set(tools.GROUPS["run"]) == {"bytecode", "postgresql", "kafka", "ferretdb", "grpcurl"}
    for test_only in ("deploy", "chromium", "clients", "ghz", "buf", "containers"):
        assert test_only in tools.GROUPS["test"] and test_only not in tools.GROUPS["run"]
    assert set(tools.GROUPS["run"]) | set(tools.GROUPS["test"]) == set(tools.COMPONENTS)


def test_bytecode_compiles_what_is_stale_whatever_the_environment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    source = tmp_path / "pkg" / "mod.py"
    source.parent.mkdir()
    source.write_text("X = 1\n")
    monkeypatch.setattr(tools, "_python_sources", lambda: [source, tmp_path / "gone.py"])
    said: list[str] = []
    assert tools.install(["bytecode"], log=said.append) == {"bytecode": mock.ANY}
    assert [p.name for p in (source.parent / "__pycache__").iterdir()] == [
        f"mod.{sys.implementation.cache_tag}.pyc"
    ]
    assert "[install] bytecode: 1 files compiled" in said
    assert tools.install(["bytecode"], log=said.append) == {}  # current: nothing to do
    source.write_text("X = 2\n")
    os.utime(source, (source.stat().st_mtime + 5,) * 2)
    assert tools.install(["bytecode"], log=said.append) == {"bytecode": mock.ANY}


def test_run_and_token_start_without_the_operator_tools_clients(tmp_path: Path) -> None:
    """`storefront run` / `token` import no database or card-vault client (1.5 s of imports);
    a tool's command imports its own module, `--help` every command's."""
    probe = (
        "import sys\n"
        "from storefront_cli.main import main\n"
        f"main(['token', '--role', 'staff', '--run-dir', {str(tmp_path)!r}])\n"
        "print(sorted(m for m in ('pymongo', 'pymongocrypt', 'storefront_cli.keys',"
        " 'storefront_cli.check') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "[]", out
    helped = subprocess.run(
        [sys.executable, "-m", "storefront_cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in {*main.TOOLS, "run", "demo", "token", "console"}:
        assert re.search(rf"^    {command}\s", helped, re.M), command


def test_bytecode_is_what_the_processes_import() -> None:
    """The project's packages and its runtime dependencies' modules, extras included (the card
    vault's libmongocrypt binding), not the development group's."""
    sources = set(tools._python_sources())
    for module in ("svckit.app", "pymongo", "pymongocrypt", "aiokafka", "grpc", "storefront"):
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None
        assert Path(spec.origin) in sources, module
    for dev_only in ("mypy", "_pytest", "hypothesis"):
        spec = importlib.util.find_spec(dev_only)
        assert spec is not None and spec.origin is not None
        assert Path(spec.origin) not in sources, dev_only


def test_make_test_installs_everything() -> None:
    assert re.search(r"-m stack install$", make_dry_run("test"), re.M)


def test_go_tools_are_the_go_mod_tool_directives_with_their_versions() -> None:
    go_mod = (tools.GO_TOOLS_MODULE / "go.mod").read_text()
    block = re.search(r"^tool \((.*?)^\)", go_mod, re.M | re.S)
    assert block is not None
    assert sorted(block[1].split()) == sorted(tools.GO_TOOLS.values())
    assert (tools.GO_TOOLS_MODULE / "go.sum").stat().st_size > 0
    assert tools.go_tool_version("grpcurl") == "v1.9.3"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tools.go_tool_version("protoc-gen-go"))


def test_npm_tools_are_package_json_dev_dependencies_in_the_lockfile() -> None:
    package = json.loads((REPO / "package.json").read_text())
    lock = json.loads((REPO / "package-lock.json").read_text())
    for name, version in package["devDependencies"].items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    assert "@bufbuild/protoc-gen-es" in package["devDependencies"]


def test_kafka_version_is_the_poms() -> None:
    assert f"<kafka.version>{tools.KAFKA_VERSION}</kafka.version>" in tools.KAFKA_POM.read_text()


def test_get_uv_picks_this_machines_linux_wheel() -> None:
    files: list[dict[str, object]] = [
        {"filename": f"uv-{get_uv.VERSION}.tar.gz"},
        {"filename": f"uv-{get_uv.VERSION}-py3-none-macosx_11_0_arm64.whl"},
        {
            "filename": f"uv-{get_uv.VERSION}-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"
        },
        {
            "filename": f"uv-{get_uv.VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
        },
    ]
    assert str(get_uv.wheel_for(files, "x86_64")["filename"]).endswith("_x86_64.whl")
    assert "aarch64" in str(get_uv.wheel_for(files, "aarch64")["filename"])
    with pytest.raises(SystemExit, match="riscv64"):
        get_uv.wheel_for(files, "riscv64")


def _fake_kcat(tmp_path: Path, librdkafka: str) -> Path:
    """A kcat that says which librdkafka it runs on and where the loader would look first."""
    kcat = tmp_path / "usr" / "kcat"
    kcat.parent.mkdir(exist_ok=True)
    kcat.write_text(
        f'#!/bin/sh\necho "Version 1.7.1 (librdkafka {librdkafka} builtin.features=sasl_scram)"\n'
        'echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"\n'
    )
    kcat.chmod(0o755)
    return kcat


@pytest.fixture
def kcat_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """stack.tools' kcat paths inside tmp_path, and a stand-in for the wheel's library."""
    library = tmp_path / "wheel" / "librdkafka-0123abcd.so.1"
    library.parent.mkdir()
    library.write_bytes(b"\x7fELF stand-in")
    monkeypatch.setattr(tools, "BIN_DIR", tmp_path / "bin")
    monkeypatch.setattr(tools, "STAMPS_DIR", tmp_path / "stamps")
    monkeypatch.setattr(tools, "KCAT_WRAPPER", tmp_path / "bin" / "kcat")
    monkeypatch.setattr(tools, "KCAT_LIBRDKAFKA", tmp_path / "kcat" / "lib" / "librdkafka.so.1")
    monkeypatch.setattr(tools, "_wheel_librdkafka", lambda: ("2.16.1", library))
    return library


def test_kcat_is_debians_on_the_wheels_librdkafka_installed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kcat_tools: Path
) -> None:
    monkeypatch.setattr(tools, "_debian_kcat", lambda: _fake_kcat(tmp_path, "2.16.0"))
    assert tools._install_kcat(lambda _: None)
    assert tools.KCAT_LIBRDKAFKA.read_bytes() == kcat_tools.read_bytes()
    out = subprocess.run(
        [tools.path("kcat"), "-V"], capture_output=True, text=True, check=True
    ).stdout
    assert f"LD_LIBRARY_PATH={tools.KCAT_LIBRDKAFKA.parent}\n" in out
    assert tools.librdkafka_version(tools.path("kcat")) == (2, 16, 0)
    assert not tools._install_kcat(lambda _: None)  # stamped: nothing to do
    kcat_tools.write_bytes(b"\x7fELF another build")
    assert tools._install_kcat(lambda _: None)  # a new wheel's library is copied again


def test_kcat_install_fails_on_a_librdkafka_whose_scram_kafka_4_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kcat_tools: Path
) -> None:
    # What Debian bookworm's kcat reports with its own librdkafka.
    monkeypatch.setattr(tools, "_debian_kcat", lambda: _fake_kcat(tmp_path, "2.0.2"))
    with pytest.raises(tools.ToolError, match=r"librdkafka 2\.0\.2; SCRAM .* needs 2\.6\.1\+"):
        tools._install_kcat(lambda _: None)
    assert not (tools.STAMPS_DIR / "kcat.json").exists()


def test_kcat_library_is_the_confluent_kafka_wheels_with_scram() -> None:
    version, library = tools._wheel_librdkafka()
    assert version == _locked_version("confluent-kafka")
    assert library.name.startswith("librdkafka") and library.stat().st_size > 1_000_000
    assert b"sasl_scram" in library.read_bytes()


def _locked_version(package: str) -> str:
    lock = (REPO / "uv.lock").read_text()
    found = re.search(rf'^name = "{package}"\nversion = "([^"]+)"', lock, re.M)
    assert found, f"{package} not in uv.lock"
    return found[1]
