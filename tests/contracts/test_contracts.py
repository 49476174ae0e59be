"""The contracts gate: gen/ matches protos/, buf lint passes, and nothing breaks
compatibility with the previous commit (buf breaking)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)


def test_gen_is_current() -> None:
    result = run("tools/protogen.py", "--check")
    assert result.returncode == 0, result.stderr


def test_buf_lint_and_breaking() -> None:
    result = run("tools/protolint.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "buf lint: ok" in result.stdout


def test_buf_lint_catches_a_bad_proto(tmp_path: Path) -> None:
    bad = ROOT / "protos" / "storefront" / "zz_lint_probe" / "v1"
    bad.mkdir(parents=True)
    try:
        (bad / "probe.proto").write_text(
            'syntax = "proto3";\npackage storefront.zz_lint_probe.v1;\nenum Bad { A = 0; }\n'
        )
        result = run("tools/protolint.py", "--against", "HEAD")
        assert result.returncode != 0
        assert 'should be suffixed with "_UNSPECIFIED"' in result.stdout + result.stderr
    finally:
        (bad / "probe.proto").unlink()
        bad.rmdir()
        bad.parent.rmdir()


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:]


def test_generators_match_the_runtimes_the_clients_use() -> None:
    """Generated code and its runtime library go together: protoc-gen-es with @bufbuild/protobuf
    (both in package.json), protoc-gen-go (tools/go/go.mod) with google.golang.org/protobuf
    (examples/go/go.mod)."""
    from stack import tools

    package = json.loads((ROOT / "package.json").read_text())
    generator = package["devDependencies"]["@bufbuild/protoc-gen-es"]
    assert package["dependencies"]["@bufbuild/protobuf"] == generator
    go_mod = (ROOT / "examples" / "go" / "go.mod").read_text()
    assert f"google.golang.org/protobuf {tools.go_tool_version('protoc-gen-go')}\n" in go_mod
