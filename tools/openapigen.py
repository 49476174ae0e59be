"""Generate docs/openapi/storefront.swagger.json (OpenAPI 2.0) from protos/.

The document describes the JSON/REST API exactly as Envoy's grpc_json_transcoder serves it:
paths from the `google.api.http` annotations, lowerCamelCase field names
(`json_names_for_fields`, the proto3 JSON default that Envoy prints), google.rpc.Status as
the error body. protoc-gen-openapiv2 (grpc-gateway's OpenAPI plugin, used only as a document
generator) runs through `python -m grpc_tools.protoc` with the include directories of
tools/protogen.py. `--check` fails when the committed document is stale.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import topology
from stack import tools
from tools.protogen import PROTOS, ROOT, include_dirs, is_public, proto_files

OUT = ROOT / "docs" / "openapi" / "storefront.swagger.json"
PLUGIN = "protoc-gen-openapiv2"

INFO = {
    "title": "Storefront API",
    "version": "v1",
    "description": (
        "JSON/REST view of the Storefront gRPC services "
        f"({', '.join(s.name for s in topology.SYSTEM.public)}), "
        "served by Envoy's gRPC-JSON transcoder. Field names are lowerCamelCase (snake_case "
        "is also accepted on input); int64 values are JSON strings; enums are their full "
        "names, e.g. ADDRESS_TYPE_SHIPPING. Errors are google.rpc.Status objects "
        '({"code", "message", "details"}) with the HTTP status mapped from the gRPC code. '
        "See docs/api.md."
    ),
}


def plugin_options(files: list[str]) -> str:
    # The plugin insists on a Go import path per file; any value works, it only names things.
    go_paths = [f"M{f}=storefront.invalid/{Path(f).parent}" for f in files]
    return ",".join(
        [
            "allow_merge=true",
            f"merge_file_name={OUT.name.removesuffix('.swagger.json')}",
            "json_names_for_fields=true",
            "openapi_naming_strategy=simple",
            "preserve_rpc_order=true",
            *go_paths,
        ]
    )


def _quiet_install_log(msg: str) -> None:
    if "up to date" not in msg:
        print(msg, file=sys.stderr, flush=True)


def render() -> str:
    """The OpenAPI document for the current protos, as committed (JSON text)."""
    tools.ensure([PLUGIN], log=_quiet_install_log)
    files = [f for f in proto_files(PROTOS) if is_public(f)]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "grpc_tools.protoc"]
        cmd += [f"-I{d}" for d in include_dirs(PROTOS)]
        cmd += [
            f"--plugin={PLUGIN}={tools.path(PLUGIN)}",
            f"--openapiv2_out={tmp}",
            f"--openapiv2_opt={plugin_options(files)}",
            *files,
        ]
        subprocess.run(cmd, check=True)
        doc = json.loads((Path(tmp) / OUT.name).read_text())
    doc["info"] = INFO
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the document is stale")
    args = parser.parse_args()
    fresh = render()
    rel = OUT.relative_to(ROOT)
    if args.check:
        if not OUT.exists() or OUT.read_text() != fresh:
            print(f"{rel} is stale; run `uv run python tools/openapigen.py`", file=sys.stderr)
            return 1
        print(f"{rel} is current")
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(fresh)
    print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
