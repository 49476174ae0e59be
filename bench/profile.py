"""`uv run python -m bench.profile [--seconds 20]`: where a service's time goes on its hottest
path, GetCustomer, with py-spy (the dev group installs it).

Starts the bench's system (its own embedded stack, the services, 1,000 customers), drives
GetCustomer with ghz at the bench's concurrency, and samples accounts_svc with
``py-spy record`` meanwhile. Prints the share of the samples in which each of the functions
that matter appears (inclusive), then the functions that take the most samples themselves, and
keeps py-spy's collapsed stacks (``--out``) for a flame graph. docs/performance.md quotes it.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import loadgen
from bench.runner import ACCOUNTS, FULL, Bench, log

WATCHED = (
    ("svckit's interceptors, all of it", ("svckit/interceptors.py", "svckit/authz.py")),
    ("  token and policy", ("guard (svckit/authz.py", "check (svckit/authz.py")),
    ("  admission (unknown fields, text budget)", ("admit (svckit/interceptors.py",)),
    ("  server span, trace context", ("svckit/tracing.py", "opentelemetry/")),
    ("  metrics", ("prometheus_client/",)),
    ("  the servicer (grpc_api and below)", ("_svc/grpc_api.py",)),
    ("    pymongo", ("pymongo/", "bson/")),
    ("    document mapping", ("svckit/documents.py",)),
    ("    masked()", ("masked (accounts_svc/domain.py",)),
)
"""(label, substrings of a frame) of what is reported inclusively."""
MAIN = "_run_module_as_main"
"""The root frame of the main thread's stacks (``python -m accounts_svc``)."""
NATIVE = "Runner.run (asyncio/runners.py"
"""The frame native code runs under in the main thread (grpc's core and Cython layer, uvloop,
upb): py-spy without --native sees none of their frames."""


def summarize(collapsed: Path, top: int = 15) -> str:
    """Inclusive shares of WATCHED and the top functions by own samples, from py-spy's
    collapsed stacks (``frame;frame;... count`` per line)."""
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack.startswith(MAIN):
            continue  # the event loop's thread only
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for label, needles in WATCHED:
            if any(needle in frame for frame in frames for needle in needles):
                inclusive[label] += count
        own[frames[-1]] += count
    if not total:
        return "no samples"
    lines = [f"{total:,} samples of accounts_svc's main thread (idle excluded)", ""]
    lines += [f"{inclusive[label] / total:6.1%}  {label}" for label, _ in WATCHED]
    lines += [f"{own[next(f for f in own if NATIVE in f)] / total:6.1%}  native (grpc, uvloop)"]
    lines += ["", "most samples in the function itself:"]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("bench/profile.collapsed"))
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    run_dir = Path(tempfile.mkdtemp(prefix="storefront-profile-"))
    bench = Bench(FULL, run_dir)
    try:
        bench.start()
        bench.seed()
        pid = bench.h.pid("accounts")
        assert pid, "accounts_svc is not running"
        log(f"[profile] ghz GetCustomer for {args.seconds:.0f}s, py-spy on pid {pid}")
        record = subprocess.Popen(
            [
                *(spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds))),
                *("--rate", "200", "--format", "raw", "--output", str(args.out)),
                "--nonblocking",  # sampled without stopping it: the rate is the bench's
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        load = loadgen.ghz(
            bench.h.target("accounts"),
            f"{ACCOUNTS}.GetCustomer",
            bench.get_requests(),
            concurrency=FULL.concurrency,
            duration=args.seconds,
            metadata=bench.role(),
        )
        _, err = record.communicate(timeout=120)
        if record.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err[-2000:]}")
        print(f"\n{load}\n")
        print(summarize(args.out))
        print(f"\n[profile] collapsed stacks in {args.out}")
    finally:
        bench.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
