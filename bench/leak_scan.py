"""How long the test suites' leak scan (tests/leaks.py) takes over a run dir's logs.

    uv run python -m bench.leak_scan [RUN_DIR] [--mb 23]

Without RUN_DIR it writes a synthetic one: the logs of a fault-suite run with a database
outage (FerretDB's error entries with their stack traces, the services' JSON lines, Kafka's
segment names), ``--mb`` megabytes in all, with one planted leak of each kind. It prints the
one-pass scan's time and throughput next to the line-by-line scan it replaced (each line
searched with every pattern), and checks both report the same findings.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests import leaks

FERRETDB_ERROR = (
    b"2026-12-02T10:11:12.123Z\tERROR\tpostgresql/collection.go:107\tAcquire\t"
    b'map[string]interface {}{"err":(*pgconn.ConnectError)(0xc000a1b2c0), "name":"postgresql"}\n'
    b"github.com/FerretDB/FerretDB/internal/backends/postgresql.(*collection).Query\n"
    b"\t/root/go/pkg/mod/github.com/!ferret!d!b/!ferret!d!b@v1.24.2/internal/backends/"
    b"postgresql/collection.go:107\n"
    b"github.com/FerretDB/FerretDB/internal/handler.(*Handler).MsgFind\n"
    b"\t/root/go/pkg/mod/github.com/!ferret!d!b/!ferret!d!b@v1.24.2/internal/handler/"
    b"msg_find.go:157\n"
)
SERVICE_LINE = (
    b'{"time": "2026-12-02T10:11:12.123456+00:00", "level": "WARNING", "logger": '
    b'"svckit.consumer", "message": "consumer orders-svc waiting 1.8s: a backing service is '
    b'unavailable", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "service": "orders"}\n'
)
KAFKA_LINE = (
    b"[2026-12-02 10:11:12,123] INFO [LocalLog partition=orders.order.fulfill-0, "
    b"dir=/tmp/run/data/kafka] Rolled new log segment at offset 9 in 1 ms. "
    b"(kafka.log.LocalLog) 00000000000000000009.snapshot\n"
)
PLANTED = b"".join(
    [
        b"error: {'first_name': 'Rajesh'}\n",
        b"contact chaos-c1-77.v2@example.com\n",
        b"card 4111 1111 1111 1111\n",
        b"card 5500-0055-5555-5559\n",
        b"last eight 00000009 alone\n",
    ]
)


def synthetic_run_dir(mb: float) -> Path:
    run_dir = Path(tempfile.mkdtemp(prefix="leak-scan-"))
    logs = run_dir / "logs"
    logs.mkdir()
    for name, unit, share in (
        ("ferretdb.log", FERRETDB_ERROR, 0.85),
        ("orders.log", SERVICE_LINE, 0.10),
        ("kafka.log", KAFKA_LINE, 0.05),
    ):
        body = unit * int(mb * 1e6 * share / len(unit))
        half = len(body) // 2 // len(unit) * len(unit)
        (logs / name).write_bytes(body[:half] + PLANTED + body[half:])
    return run_dir


def line_by_line(run_dir: Path) -> list[str]:
    return [
        leak
        for path in leaks.log_files(run_dir)
        for n, line in enumerate(path.read_bytes().split(b"\n"), 1)
        for leak in leaks.personal_leaks(f"{path.name}:{n}", line)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--mb", type=float, default=23.0)
    args = parser.parse_args()
    run_dir = args.run_dir or synthetic_run_dir(args.mb)
    size = sum(p.stat().st_size for p in leaks.log_files(run_dir))
    lines = sum(p.read_bytes().count(b"\n") for p in leaks.log_files(run_dir))
    t0 = time.perf_counter()
    fast = leaks.log_leaks(run_dir)
    one_pass = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = line_by_line(run_dir)
    old = time.perf_counter() - t0
    print(f"leak scan of {run_dir}/logs: {size / 1e6:.1f} MB, {lines:,} lines")
    print("| scan | seconds | MB/s | findings |\n|---|---|---|---|")
    rate = size / 1e6 / one_pass
    print(f"| one pass (tests/leaks.py) | {one_pass:.2f} | {rate:.1f} | {len(fast)} |")
    print(f"| line by line (before) | {old:.2f} | {size / 1e6 / old:.1f} | {len(slow)} |")
    print(f"same findings: {fast == slow}")
    return 0 if fast == slow else 1


if __name__ == "__main__":
    raise SystemExit(main())
