"""Generate gen/ from protos/: Python messages, gRPC stubs, .pyi stubs and the
descriptor set Envoy transcodes with. `--check` fails when gen/ is stale.

Google's own protos come from the installed googleapis-common-protos and
grpcio-tools packages, so none are copied into the repo.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import google.api
import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "gen"
DESCRIPTOR_NAME = "storefront.binpb"
INTERNAL_PROTOS = "storefront/admin/"
"""The internal admin service: served on each service's own port only, so it is never
transcoded, routed by Envoy or the ingress, or in the REST API's OpenAPI document."""


def is_public(proto_file: str) -> bool:
    """Whether a proto file (its path under protos/) belongs to the public API."""
    return not proto_file.startswith(INTERNAL_PROTOS)


def include_dirs(protos: Path) -> list[Path]:
    """Directories protoc searches: ours, googleapis-common-protos, the well-known types."""
    googleapis_root = Path(next(iter(google.api.__path__))).parent.parent
    return [protos, googleapis_root, Path(grpc_tools.__file__).parent / "_proto"]


def proto_files(protos: Path = PROTOS) -> list[str]:
    return sorted(str(p.relative_to(protos)) for p in protos.rglob("*.proto"))


def protoc(*args: str, protos: Path = PROTOS) -> None:
    cmd = [sys.executable, "-m", "grpc_tools.protoc"]
    cmd += [f"-I{d}" for d in include_dirs(protos)]
    cmd += list(args)
    subprocess.run(cmd, check=True)


def build_descriptor_set(out: Path, *, source_info: bool, protos: Path = PROTOS) -> None:
    """One FileDescriptorSet with every import: Envoy needs google/api/http too."""
    args = [f"--descriptor_set_out={out}", "--include_imports"]
    if source_info:
        args.append("--include_source_info")
    # error_details: Envoy can print google.rpc details only for types it knows.
    protoc(*args, *proto_files(protos), "google/rpc/error_details.proto", protos=protos)


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    protoc(
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "--mypy_opt=quiet",
        "--mypy_grpc_opt=quiet",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *proto_files(),
    )
    # Packages, so `storefront.<service>.v1` imports and packages like any other code.
    for pkg in [p for p in out.rglob("*") if p.is_dir()]:
        (pkg / "__init__.py").touch()
    build_descriptor_set(out / DESCRIPTOR_NAME, source_info=False)


def differences(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    found = [f"only in {a.name}: {n}" for n in cmp.left_only]
    found += [f"only in new: {n}" for n in cmp.right_only]
    found += [f"changed: {n}" for n in cmp.diff_files]
    for sub, sub_cmp in cmp.subdirs.items():
        found += [f"{sub}/{d}" for d in differences(Path(sub_cmp.left), Path(sub_cmp.right))]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if gen/ is not current")
    parser.add_argument(
        "--lint-image", type=Path, help="also write a descriptor set with source info"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "gen"
        generate(fresh)
        if args.lint_image:
            build_descriptor_set(args.lint_image, source_info=True)
        if args.check:
            stale = differences(GEN, fresh) if GEN.exists() else ["gen/ is missing"]
            if stale:
                print("gen/ is stale; run `make gen`:\n  " + "\n  ".join(stale), file=sys.stderr)
                return 1
            print("gen/ is current")
            return 0
        shutil.rmtree(GEN, ignore_errors=True)
        shutil.copytree(fresh, GEN)
        print(f"generated {len(proto_files())} protos into {GEN.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
