"""``python -m stack install|up|down|status|acls|kcat|path``: the local stack from the command
line.

``up`` runs everything detached under ``<repo>/.run`` (``--run-dir`` to change), so the shell
returns and ``down`` -- from any shell -- stops exactly what was started there, including
processes other code later registered in the same run dir (services, Envoy).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from stack import tools
from stack.embedded import FERRETDB, KAFKA, EmbeddedStack, Ports
from stack.private import create_private
from stack.procs import ProcessError, Supervisor, port_open

DEFAULT_RUN_DIR = tools.REPO_ROOT / ".run"


def _say(msg: str) -> None:
    print(msg, flush=True)


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Serialise up/down on one run dir, so two concurrent ``up`` calls cannot both start Kafka."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "stack.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _print_endpoints(st: EmbeddedStack) -> None:
    kafka_src = "external" if st.external_kafka else "embedded"
    mongo_src = "external" if st.external_mongodb else "embedded"
    _say(f"  KAFKA_BOOTSTRAP_SERVERS={st.kafka_bootstrap}  ({kafka_src})")
    if not st.external_kafka:
        _say(f"  Kafka: SASL/SCRAM and ACLs, passwords in {st.kafka_credentials.dir}")
    _say(f"  MONGODB_URI={st.mongodb_uri}  ({mongo_src})")
    env_file = st.run_dir / "stack.env"
    if env_file.exists():
        _say(f"  env file: {env_file}  (load with: set -a; . {env_file}; set +a)")


def cmd_install(args: argparse.Namespace) -> int:
    only = args.only.split(",") if args.only else None
    t0 = time.monotonic()
    try:
        timings = tools.install(only, log=_say)
    except tools.ToolError as exc:
        _say(f"[install] FAILED: {exc}")
        return 1
    spent = ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) or "nothing to do"
    _say(f"[install] finished in {time.monotonic() - t0:.1f}s ({spent})")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).resolve()
    t0 = time.monotonic()
    with _locked(run_dir):
        ports = None
        if args.kafka_port or args.controller_port or args.mongodb_port:
            default = EmbeddedStack(run_dir, log=_say).ports
            ports = Ports(
                kafka=args.kafka_port or default.kafka,
                kafka_controller=args.controller_port or default.kafka_controller,
                mongodb=args.mongodb_port or default.mongodb,
            )
        st = EmbeddedStack(run_dir, ports, log=_say, brokers=args.brokers)
        if st.is_up():
            st = EmbeddedStack(run_dir, log=_say)  # report the ports it is really using
            pids = {n: pid for n in (*st.brokers, FERRETDB) if (pid := st.supervisor.pid(n))}
            running = ", ".join(f"{n} pid {p}" for n, p in pids.items()) or "external only"
            _say(f"[up] already up ({running}); nothing to do")
            _print_endpoints(st)
            return 0
        try:
            timings = st.start()
        except (ProcessError, tools.ToolError, TimeoutError) as exc:
            _say(f"[up] FAILED: {exc}")
            return 1
        for step, secs in timings.items():
            _say(f"[up] {step}: {secs:.1f}s")
        st.write_env_file()
    _say(f"[up] stack up in {time.monotonic() - t0:.1f}s (run dir {run_dir})")
    _print_endpoints(st)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).resolve()
    if not (run_dir / "pids").is_dir():
        _say(f"[down] nothing was started in {run_dir}")
        return 0
    t_all = time.monotonic()
    with _locked(run_dir):
        sup = Supervisor(run_dir)
        stopped = 0
        for name in sup.names():
            t0 = time.monotonic()
            if sup.stop(name):
                stopped += 1
                _say(f"[down] stopped {name} in {time.monotonic() - t0:.1f}s")
        (run_dir / "stack.env").unlink(missing_ok=True)
    if stopped:
        _say(f"[down] done in {time.monotonic() - t_all:.1f}s")
    else:
        _say("[down] nothing was running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).resolve()
    st = EmbeddedStack(run_dir, log=_say)
    rows = st.supervisor.status()
    if not rows:
        _say(f"nothing started in {run_dir}")
    else:
        _say(f"{'NAME':<16} {'STATE':<8} {'PID':>7} {'PORT':>6} {'LISTEN':<6} {'UPTIME':>8}  LOG")
        for r in rows:
            listen = "" if r.ready_port is None else ("yes" if port_open(r.ready_port) else "no")
            uptime = "" if r.uptime_s is None else f"{r.uptime_s:.0f}s"
            _say(
                f"{r.name:<16} {r.state:<8} {r.pid or '':>7} {r.ready_port or '':>6} "
                f"{listen:<6} {uptime:>8}  {r.log}"
            )
    _print_endpoints(st)
    running = [r for r in rows if r.state == "running"]
    return 0 if running or st.is_up() else 3


def cmd_acls(args: argparse.Namespace) -> int:
    """The ACLs the embedded broker holds, read as its super user (stack.kafka_security)."""
    from stack.embedded import _run_sync
    from stack.kafka_security import BROKER, describe_acls, rule_text

    st = EmbeddedStack(Path(args.run_dir).resolve(), log=_say)
    if st.external_kafka or not st.supervisor.is_running(KAFKA):
        _say("the embedded Kafka of this run dir is not running")
        return 1
    for rule in sorted(_run_sync(lambda: describe_acls(st.kafka_as(BROKER)))):
        _say(rule_text(rule))
    return 0


def cmd_kcat(args: argparse.Namespace) -> int:
    """kcat (stack.tools: Debian's, on a librdkafka whose SCRAM Kafka 4 accepts) as the run
    dir's operator, who only reads; the settings go in an owner-only file for ``-F``, so the
    password stays off the command line."""
    from stack.kafka_security import OPERATOR

    # Progress on stderr: kcat's own output (records, metadata) may be piped.
    try:
        tools.ensure(("kcat",), log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except tools.ToolError as exc:
        print(exc, file=sys.stderr)
        return 1
    st = EmbeddedStack(Path(args.run_dir).resolve(), log=_say)
    settings = st.kafka_as(OPERATOR).librdkafka_config()
    kcat_args = args.kcat_args[1:] if args.kcat_args[:1] == ["--"] else args.kcat_args
    with tempfile.TemporaryDirectory(prefix="kcat.") as tmp:  # 0700
        config = Path(tmp) / "kcat.conf"
        create_private(config, "".join(f"{k}={v}\n" for k, v in settings.items()).encode())
        argv = [str(tools.path("kcat")), "-F", str(config), *kcat_args]
        return subprocess.run(argv, check=False).returncode


def cmd_path(args: argparse.Namespace) -> int:
    try:
        _say(str(tools.path(args.name)))
    except tools.ToolError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m stack``."""
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("install", help="install/cache Kafka jars, FerretDB and CLI tools")
    p.add_argument(
        "--only",
        help="comma list of groups (run: what `make run` needs; test: the rest; tools) "
        "or components",
    )
    p.set_defaults(func=cmd_install)
    for name, func, text in (
        ("up", cmd_up, "start Kafka + FerretDB detached, write <run-dir>/stack.env"),
        ("down", cmd_down, "stop every process started in the run dir"),
        ("status", cmd_status, "show the processes of the run dir"),
        ("acls", cmd_acls, "list the ACLs the embedded Kafka enforces"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR), help="default: <repo>/.run")
        p.set_defaults(func=func)
        if name == "up":
            # Only needed when the defaults (9092/9093/27017) are taken; remembered in the
            # run dir, so later `up`/`status` there reuse them.
            p.add_argument("--kafka-port", type=int, help="Kafka client port (default 9092)")
            p.add_argument("--controller-port", type=int, help="KRaft port (default 9093)")
            p.add_argument("--mongodb-port", type=int, help="FerretDB port (default 27017)")
            p.add_argument(
                "--brokers",
                type=int,
                choices=(1, 3),
                default=1,
                help="1 Kafka node, or a KRaft cluster of 3 (its nodes on the first's ports "
                "+2 and +4)",
            )
    p = sub.add_parser(
        "kcat", help="run kcat as the run dir's Kafka operator: python -m stack kcat -- -L"
    )
    p.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR), help="default: <repo>/.run")
    p.add_argument("kcat_args", nargs=argparse.REMAINDER, help="kcat's arguments, after --")
    p.set_defaults(func=cmd_kcat)
    p = sub.add_parser("path", help="print the absolute path of an installed tool")
    p.add_argument("name")
    p.set_defaults(func=cmd_path)
    args = parser.parse_args(argv)
    return int(args.func(args))
