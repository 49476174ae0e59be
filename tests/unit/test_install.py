"""What `make run` installs (only what running needs), where tool versions are pinned (their
ecosystems' manifests), and uv's own install without pip."""

from __future__ import annotations

import json
import re
import subprocess
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
    assert set(tools.GROUPS["run"]) == {"postgresql", "kafka", "ferretdb", "grpcurl"}
    for test_only in ("deploy", "chromium", "clients", "ghz", "buf", "containers"):
        assert test_only in tools.GROUPS["test"] and test_only not in tools.GROUPS["run"]
    assert set(tools.GROUPS["run"]) | set(tools.GROUPS["test"]) == set(tools.COMPONENTS)


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
