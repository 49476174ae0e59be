"""Load generators: ghz for gRPC, wrk for HTTP/1.1 JSON through Envoy.

Both are native programs (Go and C), so the load generator takes as little of the two cores
as possible from the system under test. Each call returns a LoadResult with the same fields.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stack import tools

ROOT = Path(__file__).resolve().parent.parent
PROTOSET = ROOT / "gen" / "storefront.binpb"


@dataclass
class LoadResult:
    tool: str
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    concurrency: int
    error_kinds: dict[str, int] = field(default_factory=dict)
    cpu_ms_per_call: dict[str, float] = field(default_factory=dict)
    """CPU milliseconds per request by process, when the caller metered the run (bench.cpu)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class LoadError(RuntimeError):
    pass


def ensure_ghz() -> Path:
    tools.ensure(["ghz"], log=lambda _: None)
    return tools.path("ghz")


def ensure_wrk() -> str:
    """wrk from Debian's packages; installed with apt-get when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "install", "-y", "-qq", "wrk"],):
            res = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL)
            if res.returncode != 0:  # the package lists may be missing on a fresh machine
                subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
                subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL)
        found = shutil.which("wrk")
        if found:
            return found
    raise LoadError("wrk is not installed (apt-get install -y wrk)")


def ghz(
    target: str,
    call: str,
    data: list[dict[str, Any]] | dict[str, Any],
    *,
    concurrency: int,
    duration: float,
    connections: int = 1,
    rps: int = 0,
    timeout: float = 10.0,
    metadata: list[dict[str, str]] | dict[str, str] | None = None,
    total: int = 0,
    protoset: Path | None = PROTOSET,
) -> LoadResult:
    """Run ghz for `duration` seconds (or for `total` requests); `data` is one request or a
    list used round-robin, and so is `metadata` (e.g. the authorization header), in step
    with `data`. `protoset=None` makes ghz find the method through server reflection."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(data, f)
        data_file = f.name
    metadata_file = None
    template, env = metadata_template(metadata)
    if template is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(template, f)
            metadata_file = f.name
    argv = [
        str(ensure_ghz()),
        "--insecure",
        *(("--protoset", str(protoset)) if protoset else ()),
        "--call",
        call,
        "--data-file",
        data_file,
        "--concurrency",
        str(concurrency),
        "--connections",
        str(connections),
        *(("--total", str(total)) if total else ("--duration", f"{duration:g}s")),
        "--timeout",
        f"{timeout:g}s",
        "--format",
        "json",
        "--skipFirst",
        "0",
    ]
    if rps:
        argv += ["--rps", str(rps)]
    if metadata_file:
        argv += ["--metadata-file", metadata_file]
    argv.append(target)
    try:
        res = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=(max(600, timeout * total) if total else duration) + 60,
            env={**os.environ, **env},
        )
    finally:
        os.unlink(data_file)
        if metadata_file:
            os.unlink(metadata_file)
    if not res.stdout.strip():
        raise LoadError(f"ghz printed nothing: {res.stderr.strip()[-2000:]}")
    report = json.loads(res.stdout)
    codes: dict[str, int] = report.get("statusCodeDistribution") or {}
    errors = sum(n for code, n in codes.items() if code != "OK")
    lat = {
        int(d["percentage"]): d["latency"] / 1e6 for d in report.get("latencyDistribution") or []
    }
    total_s = report["total"] / 1e9
    ok = codes.get("OK", 0)
    return LoadResult(
        tool="ghz",
        requests=int(report["count"]),
        errors=errors,
        seconds=total_s,
        rps=ok / total_s if total_s else 0.0,
        p50_ms=lat.get(50, 0.0),
        p99_ms=lat.get(99, 0.0),
        concurrency=concurrency,
        error_kinds={k: int(v) for k, v in (report.get("errorDistribution") or {}).items()},
    )


MAX_METADATA_POOL = 2500
"""Per-request metadata rides in environment variables (~1 MB for 2,500 tokens; Linux allows
2 MB of argv + environment), because ghz 0.121 takes one metadata object, not a list."""


def metadata_template(
    metadata: list[dict[str, str]] | dict[str, str] | None,
) -> tuple[dict[str, str] | None, dict[str, str]]:
    """ghz metadata for a fixed object, or for a list used round-robin by request number, as
    its data list is: a template that picks entry `RequestNumber % len` from the environment
    (signed tokens differ per request and ghz cannot sign)."""
    if metadata is None or isinstance(metadata, dict):
        return metadata, {}
    if not 0 < len(metadata) <= MAX_METADATA_POOL:
        raise LoadError(f"metadata list of {len(metadata)}: 1 to {MAX_METADATA_POOL} entries")
    keys = sorted(metadata[0])
    env = {
        f"GHZ_MD_{k}_{i}": entry[key]
        for i, entry in enumerate(metadata)
        for k, key in enumerate(keys)
    }
    n = len(metadata)
    template = {
        key: f"{{{{ env (printf `GHZ_MD_{k}_%d` (mod .RequestNumber {n})) }}}}"
        for k, key in enumerate(keys)
    }
    return template, env


# wrk prints its summary through this script's done() as one JSON line.
WRK_SCRIPT = r"""
local paths = {}
local counter = 0
init = function(args)
  -- a line: the path, then (after a tab) that request's authorization, if it has its own
  for line in io.lines(args[1]) do
    local path, auth = line:match("^([^\t]*)\t?(.*)$")
    table.insert(paths, {path, auth})
  end
end
request = function()
  counter = counter + 1
  -- wrk.format's headers replace wrk.headers (the -H options, e.g. authorization): merge them
  local headers = {["Accept"] = "application/json"}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  local item = paths[(counter % #paths) + 1]
  if item[2] ~= "" then headers["authorization"] = item[2] end
  return wrk.format("GET", item[1], headers)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nBENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_get(
    base_url: str,
    paths: list[str],
    *,
    concurrency: int,
    duration: float,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    authorizations: list[str] | None = None,
) -> LoadResult:
    """GET the paths round-robin over `concurrency` keep-alive HTTP/1.1 connections, each with
    `headers`, and path i with authorization `authorizations[i]` if given (as its own user:
    Envoy limits each principal's rate, so one token for all measures the limit)."""
    if authorizations is not None and len(authorizations) != len(paths):
        raise ValueError("one authorization per path")
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "get.lua"
        script.write_text(WRK_SCRIPT)
        path_file = Path(tmp) / "paths.txt"
        lines = (
            [f"{p}\t{a}" for p, a in zip(paths, authorizations, strict=True)]
            if authorizations
            else paths
        )
        path_file.write_text("\n".join(lines) + "\n")
        argv = [
            wrk,
            "-t",
            str(threads),
            "-c",
            str(concurrency),
            "-d",
            f"{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            *(a for k, v in (headers or {}).items() for a in ("-H", f"{k}: {v}")),
            base_url,
            "--",
            str(path_file),
        ]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise LoadError(f"wrk gave no summary: {res.stdout[-1000:]} {res.stderr[-1000:]}")
    s = json.loads(line.removeprefix("BENCH_JSON "))
    kinds = {k: s[k] for k in ("connect", "read", "write", "status", "timeout") if s[k]}
    errors = sum(kinds.values())
    seconds = s["duration_us"] / 1e6
    ok = max(0, s["requests"] - s["status"] - s["timeout"])
    return LoadResult(
        tool="wrk",
        requests=s["requests"],
        errors=errors,
        seconds=seconds,
        rps=ok / seconds if seconds else 0.0,
        p50_ms=s["p50_us"] / 1e3,
        p99_ms=s["p99_us"] / 1e3,
        concurrency=concurrency,
        error_kinds=kinds,
    )
