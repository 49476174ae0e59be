"""Turn schemas taken from package registries into JSON schemas kubeconform reads offline.

kubernetes SRC OUT   the kubernetes-validate wheel's per-kind schemas: their $refs point at
                     https://kubernetes.io/api/_definitions.json, so they are rewritten to the
                     local _definitions.json beside them.
crds OUT CRD.yaml..  each served version of each CustomResourceDefinition becomes
                     OUT/<kind>-<group>-<version>.json, made strict like the API server is with
                     kubectl's default field validation: an object that declares its properties
                     rejects unknown ones unless it says x-kubernetes-preserve-unknown-fields.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

K8S_DEFINITIONS_REF = "/api/_definitions.json"
ROOT_PROPERTIES = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object"},
}
SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


def localise_k8s(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("$id", None)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(K8S_DEFINITIONS_REF):
            node["$ref"] = "_definitions.json" + ref[len(K8S_DEFINITIONS_REF) :]
        for value in node.values():
            localise_k8s(value)
    elif isinstance(node, list):
        for value in node:
            localise_k8s(value)


def convert_kubernetes(src: Path, out: Path) -> int:
    files = sorted(src.glob("*.json"))
    if not files:
        raise SystemExit(f"no schemas in {src}")
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        schema = json.loads(path.read_text())
        localise_k8s(schema)
        (out / path.name).write_text(json.dumps(schema))
    return len(files)


def strict(node: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI v3 structural schema -> JSON schema with the API server's semantics."""
    if node.get("x-kubernetes-int-or-string"):
        node.pop("anyOf", None)
        node["type"] = ["integer", "string"]
    if node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    for key in ("items", "not"):
        if isinstance(node.get(key), dict):
            strict(node[key])
    for key in SUBSCHEMA_LISTS:
        for sub in node.get(key, []):
            strict(sub)
    if isinstance(node.get("additionalProperties"), dict):
        strict(node["additionalProperties"])
    if "properties" in node:
        for sub in node["properties"].values():
            strict(sub)
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
    return node


def convert_crds(out: Path, crd_files: list[Path]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for crd_file in crd_files:
        for doc in yaml.safe_load_all(crd_file.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            kind = spec["names"]["kind"].lower()
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                schema = version["schema"]["openAPIV3Schema"]
                schema.setdefault("properties", {})
                for name, prop in ROOT_PROPERTIES.items():
                    schema["properties"].setdefault(name, prop)
                schema = strict(schema)
                schema["$schema"] = "http://json-schema.org/draft-07/schema#"
                name = f"{kind}-{spec['group']}-{version['name']}.json"
                (out / name).write_text(json.dumps(schema))
                count += 1
    if not count:
        raise SystemExit(f"no CustomResourceDefinition in {', '.join(map(str, crd_files))}")
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    k8s = sub.add_parser("kubernetes")
    k8s.add_argument("src", type=Path)
    k8s.add_argument("out", type=Path)
    crds = sub.add_parser("crds")
    crds.add_argument("out", type=Path)
    crds.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "kubernetes":
        n = convert_kubernetes(args.src, args.out)
    else:
        n = convert_crds(args.out, args.files)
    print(f"{n} schemas -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
