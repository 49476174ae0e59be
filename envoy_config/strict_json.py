"""Generate the strict-JSON Lua filter from the descriptor set.

For every RPC with a request body, the Lua filter knows (method, path pattern) and
the message the body decodes into; for every message, the JSON keys it accepts
(lowerCamelCase and proto names) and which of them are messages themselves.
"""

from __future__ import annotations

import re
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

LUA = Path(__file__).resolve().parent.parent / "envoy" / "strict_json.lua"
# JSON for these is a string, a number or anything at all: not checked field by field.
OPAQUE = {
    ".google.protobuf.Timestamp",
    ".google.protobuf.Duration",
    ".google.protobuf.FieldMask",
    ".google.protobuf.Struct",
    ".google.protobuf.Value",
    ".google.protobuf.ListValue",
    ".google.protobuf.Any",
    ".google.protobuf.Empty",
}
WRAPPERS = re.compile(r"^\.google\.protobuf\.\w+Value$")


def _lua_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pattern(template: str) -> str:
    """A google.api.http path template as an anchored Lua pattern."""
    out = []
    for part in re.split(r"(\{[^}]*\})", template):
        if part.startswith("{"):
            out.append("[^/]+")
        else:
            out.append(re.sub(r"([%^$().\[\]*+\-?:])", r"%\1", part))
    return "^" + "".join(out) + "$"


def lua_source(descriptor_path: Path) -> str:
    if not Path(descriptor_path).exists():  # nothing to check against; validate() reports it
        return "ROUTES = {}\nSCHEMAS = {}\n\n" + LUA.read_text()
    fds = descriptor_pb2.FileDescriptorSet.FromString(Path(descriptor_path).read_bytes())
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}

    def collect(prefix: str, msgs: list[descriptor_pb2.DescriptorProto]) -> None:
        for m in msgs:
            name = f"{prefix}.{m.name}"
            messages[name] = m
            collect(name, list(m.nested_type))

    for f in fds.file:
        collect(f".{f.package}" if f.package else "", list(f.message_type))

    routes: list[tuple[str, str, str]] = []
    for f in fds.file:
        if not f.package.startswith("storefront."):
            continue
        for service in f.service:
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                kind = rule.WhichOneof("pattern")
                if not rule.body or kind in (None, "custom"):
                    continue
                target = method.input_type
                if rule.body != "*":
                    field = next(x for x in messages[target].field if x.name == rule.body)
                    target = field.type_name
                routes.append((kind.upper(), _pattern(getattr(rule, kind)), target))

    needed: list[str] = [t for _, _, t in routes]
    schemas: dict[str, dict[str, str | bool]] = {}
    while needed:
        name = needed.pop()
        if name in schemas or name in OPAQUE or WRAPPERS.match(name):
            continue
        fields: dict[str, str | bool] = {}
        for field in messages[name].field:
            nested = field.type_name if field.type == field.TYPE_MESSAGE else ""
            value: str | bool = True
            if nested and nested not in OPAQUE and not WRAPPERS.match(nested):
                entry = messages[nested]
                if not entry.options.map_entry:
                    value = nested
                    needed.append(nested)
            for key in {field.json_name or field.name, field.name}:
                fields[key] = value
        schemas[name] = fields

    lines = ["ROUTES = {"]
    lines += [f"  {{{_lua_str(m)}, {_lua_str(p)}, {_lua_str(t)}}}," for m, p, t in routes]
    lines += ["}", "SCHEMAS = {"]
    for name, fields in sorted(schemas.items()):
        body = ", ".join(
            f"[{_lua_str(k)}] = {'true' if v is True else _lua_str(str(v))}"
            for k, v in sorted(fields.items())
        )
        lines.append(f"  [{_lua_str(name)}] = {{{body}}},")
    lines.append("}")
    return "\n".join(lines) + "\n\n" + LUA.read_text()
