"""`buf lint` on our protos, and `buf breaking` against an earlier commit.

buf reads a descriptor image built by protoc (see tools/protogen.py) because
google's protos come from installed Python packages and the BSR is out of reach.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stack.tools import path as tool_path  # noqa: E402
from tools.protogen import ROOT, build_descriptor_set  # noqa: E402


def buf(*args: str) -> int:
    cmd = [str(tool_path("buf")), *args, "--config", str(ROOT / "buf.yaml"), "--path", "storefront"]
    return subprocess.run(cmd).returncode


def protos_at(ref: str, dest: Path) -> Path | None:
    """Extract protos/ as it was at `ref`; None when that commit has no protos."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "protos"],
        capture_output=True,
    )
    if archive.returncode != 0:
        return None
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "protos"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--against",
        default="HEAD~1",
        help="git ref to check breaking changes against (default: the previous commit)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        current = Path(tmp) / "current.binpb"
        build_descriptor_set(current, source_info=True)
        if buf("lint", str(current)) != 0:
            print("buf lint failed", file=sys.stderr)
            return 1
        print("buf lint: ok")
        old_protos = protos_at(args.against, Path(tmp) / "old")
        if old_protos is None:
            print(f"buf breaking: skipped, {args.against} has no protos/")
            return 0
        previous = Path(tmp) / "previous.binpb"
        build_descriptor_set(previous, source_info=True, protos=old_protos)
        if buf("breaking", str(current), "--against", str(previous)) != 0:
            print(f"buf breaking: changes break compatibility with {args.against}", file=sys.stderr)
            return 1
        print(f"buf breaking: ok against {args.against}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
