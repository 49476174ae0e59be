"""`storefront`: run the system, demo it, and operate it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import sys
import time
from collections.abc import Container
from importlib import metadata
from pathlib import Path

import topology
from stack import issuer, prometheus, tools
from stack.embedded import EmbeddedStack
from stack.procs import ProcessError
from storefront_cli import console as web_console
from storefront_cli import system, watch
from storefront_cli.clients import CLIENT_SERVICES, Clients, acting_as_needed
from storefront_cli.demo import demo_loop, run_demo
from svckit import logs
from svckit.authz import OPERATOR, STAFF, WAREHOUSE
from svckit.envvars import ConfigError

TOOLS = {
    "check": "storefront_cli.check",
    "replay": "storefront_cli.replays",
    "dlq": "storefront_cli.replays",
    "status": "storefront_cli.status",
    "watch": "storefront_cli.tail",
    "keys": "storefront_cli.keys",
}
"""The operator tools' commands and the modules that add them (``register``). They import the
clients of every dependency (pymongo, aiokafka, the card vault's libmongocrypt: 1.5 s of the
CLI's 2.5 s start), so a command imports only its own: ``storefront run`` and ``token`` start
without them; ``--help`` and an unknown command import them all."""

RUN_DIR = tools.REPO_ROOT / ".run"
DEFAULT_TOKEN_TTL = 3600

EXIT_CODES = """exit codes (every command):
  0  done; the answer is "all good" (status: every required part up; check: no divergence)
  1  done, and the answer is "not good": status: a required part is down; check: copies
     diverge (after --repair: still diverge); replay: the read model came out different;
     dlq replay: a record failed again; watch: --limit not reached in time, or no such topic;
     run: the system did not start
  2  not done: bad usage, a setting that cannot be used (the message names it), an unknown
     read model or DLQ id
  130 interrupted (Ctrl-C) before finishing, where finishing means something (run, demo
     --loop and watch stop cleanly on Ctrl-C and exit 0)"""


OUTPUT = watch.Output()
say = OUTPUT.say


def endpoints(ports: system.SystemPorts, stack: EmbeddedStack) -> str:
    lines = ["", "Storefront is running:"]
    for s in topology.SYSTEM.names:
        for process in ports.instances(s):
            name = system.service_of(process) + "_svc" + process[len(s) :]
            lines.append(
                f"  {name:16} gRPC 127.0.0.1:{ports.grpc(process)}   "
                f"admin 127.0.0.1:{ports.admin(process)}   "
                f"metrics http://127.0.0.1:{ports.metrics(process)}/metrics"
            )
    lines += [
        f"  {'envoy':16} JSON/REST + gRPC-Web + gRPC http://127.0.0.1:{ports.envoy}"
        f"   (admin http://127.0.0.1:{ports.envoy_admin})",
        f"  {'kafka':16} {stack.kafka_bootstrap}"
        + (
            ""
            if stack.external_kafka
            else f"   (SASL/SCRAM; users in {stack.kafka_credentials.dir})"
        ),
        f"  {'mongodb':16} {logs.redacted(stack.env()['MONGODB_URI'])}",
    ]
    if stack.supervisor.is_running(prometheus.PROMETHEUS):
        lines.append(f"  {'prometheus':16} http://127.0.0.1:{prometheus.DEFAULT_PORT}")
    run_dir = "" if stack.run_dir.resolve() == RUN_DIR.resolve() else f" --run-dir {stack.run_dir}"
    if stack.supervisor.is_running(web_console.CONSOLE):
        port = console_port(stack)
        at = "" if port == web_console.DEFAULT_PORT else f" --console-port {port}"
        lines += [
            f"  {'console':16} {web_console.url(port)}   (graph, lag, outbox, DLQ, events)",
            f"  {'':16} as operator (check, replay), a link with a "
            f"{web_console.LINK_TTL // 60}-minute token: uv run storefront token --console"
            f"{run_dir}{at}",
        ]
    lines += [
        "",
        "Every call needs a bearer token from the local issuer (keys in "
        f"{stack.run_dir / 'auth'}):",
        f"  uv run storefront token{run_dir} --role staff       # or warehouse, operator",
        f"  uv run storefront token{run_dir} --customer ID      # as that customer (or sign-up)",
        "",
        "Try:",
        f"  TOKEN=$(uv run storefront token{run_dir} --role staff)",
        f'  curl -s -H "authorization: Bearer $TOKEN" http://127.0.0.1:{ports.envoy}/v1/customers',
        f"  .tools/bin/grpcurl -plaintext 127.0.0.1:{ports.grpc(topology.ACCOUNTS)} list",
        "  uv run storefront status    # health, lag, outbox and DLQ at a glance",
        f"  logs: {stack.run_dir / 'logs'}",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    took: dict[str, float] = {}

    def phase(name: str, since: float) -> float:
        now = time.monotonic()
        took[name] = now - since
        return now

    stop = watch.StopSignals()
    say("[run] installing what is missing (first time: a few minutes) ...")
    tools.install(tools.RUN, log=say)
    mark = phase("install check", t0)
    stack = EmbeddedStack(Path(args.run_dir), log=say, brokers=args.brokers)
    try:
        ports = system.SystemPorts.declared(topology.SYSTEM, args.replicas)
    except ValueError as exc:
        say(f"[run] {exc}")
        return 2
    try:
        if not args.detach:
            watch.claim_run_dir(stack.run_dir, stack.supervisor, say)
    except ProcessError as exc:
        say(f"[run] FAILED: {exc}")
        return 1
    try:
        stack.start()
        stack.write_env_file()
        mark = phase("stack", mark)
        # The console's start (a Python process loading the CLI) overlaps the services'.
        console = _start_console(stack, ports, args.console_port, wait=False)
        system.start_services(stack, ports, log=say)
        mark = phase("services", mark)
        say("[run] starting envoy ...")
        if not stack.supervisor.is_running("envoy"):
            system.start_envoy(stack, ports)
        mark = phase("envoy", mark)
    except (ProcessError, TimeoutError) as exc:
        say(f"[run] FAILED: {exc}")
        stack.stop()
        watch.release_run_dir(stack.run_dir)
        return 1
    _start_prometheus(stack, ports)
    mark = phase("prometheus", mark)
    if console:
        _console_ready(stack, args.console_port)
    mark = phase("console", mark)
    say(f"[run] system up in {time.monotonic() - t0:.1f}s")
    if not args.no_demo:
        asyncio.run(_demo(ports, stack.run_dir))
        mark = phase("demo", mark)
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in stack.timings.items())
    say(
        f"[run] took {time.monotonic() - t0:.1f}s: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in took.items())
    )
    say(f"[run] stack: {steps}")
    say(endpoints(ports, stack))
    if args.detach:
        say("Detached: `make down` stops it.")
        return 0
    running = [n for n in stack.supervisor.names() if stack.supervisor.is_running(n)]
    watchdog = watch.Watchdog(stack.supervisor, running, say)
    reason = watch.serve_until_stopped(watchdog, OUTPUT, stop)
    say(f"\n[run] stopping ({reason}) ...")
    stopped = stack.stop()
    watch.release_run_dir(stack.run_dir)
    say(f"[run] stopped {', '.join(stopped) if stopped else 'nothing'}")
    return 0


def _start_prometheus(stack: EmbeddedStack, ports: system.SystemPorts) -> None:
    """Metrics are a convenience locally: without Prometheus the system still runs."""
    url = f"http://127.0.0.1:{prometheus.DEFAULT_PORT}"
    if not stack.supervisor.is_running(prometheus.PROMETHEUS):
        say("[run] starting prometheus ...")
        try:
            url = prometheus.start_prometheus(stack, ports, log=say)
        except (ProcessError, TimeoutError, tools.ToolError) as exc:
            say(f"[run] prometheus not started (the rest runs on): {exc}")
            return
    say(f"[run] prometheus {url}  (dashboard: docs/grafana/storefront-dashboard.json)")


def _start_console(
    stack: EmbeddedStack, ports: system.SystemPorts, port: int, *, wait: bool = True
) -> bool:
    """The console is a convenience too: without it the system still runs. True if this
    call started it (without `wait`, :func:`_console_ready` waits for it)."""
    if stack.supervisor.is_running(web_console.CONSOLE):
        return False
    say("[run] starting the console ...")
    try:
        web_console.start_console(
            stack,
            ports,
            port=port,
            prometheus=f"http://127.0.0.1:{prometheus.DEFAULT_PORT}",
            wait=wait,
        )
    except (ProcessError, TimeoutError) as exc:
        say(f"[run] console not started (the rest runs on): {exc}")
        return False
    return True


def _console_ready(stack: EmbeddedStack, port: int, timeout: float = 60.0) -> None:
    try:
        stack.supervisor.wait_ready(web_console.CONSOLE, port, timeout)
    except ProcessError as exc:
        say(f"[run] console not started (the rest runs on): {exc}")


def console_port(stack: EmbeddedStack) -> int:
    """The port the run's console serves (its Supervisor record remembers it)."""
    record = stack.supervisor.record(web_console.CONSOLE)
    return record.ready_port if record and record.ready_port else web_console.DEFAULT_PORT


def _clients(ports: system.SystemPorts, run_dir: Path) -> Clients:
    """Each call acts as whoever the policy lets take it: customers sign up and order, staff
    approve, the warehouse ships; tokens from the run dir's issuer."""
    return Clients.connect(
        *(system.grpc_target(ports, s) for s in CLIENT_SERVICES),
        tokens=acting_as_needed(issuer.for_run_dir(run_dir)),
    )


async def _demo(ports: system.SystemPorts, run_dir: Path) -> None:
    clients = _clients(ports, run_dir)
    try:
        await run_demo(clients, say)
    finally:
        await clients.close()


def cmd_demo(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    ports = system.saved_ports(run_dir) or system.SystemPorts()
    if not args.loop:
        asyncio.run(_demo(ports, run_dir))
        return 0
    say(f"[demo] a round through every flow each {args.interval:g}s; Ctrl-C stops")
    t0 = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(demo_loop(lambda: _clients(ports, run_dir), say, interval=args.interval))
    say(f"[demo] stopped after {time.monotonic() - t0:.0f}s")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Print a bearer token signed by the run dir's local issuer (or the console's link with
    one: asked for, never printed unasked)."""
    if args.console:
        ttl = args.ttl or web_console.LINK_TTL
        print(web_console.operator_link(Path(args.run_dir), args.console_port, ttl))
        return 0
    local = issuer.for_run_dir(args.run_dir)
    ttl = args.ttl or DEFAULT_TOKEN_TTL
    if args.customer:
        print(local.customer(args.customer, ttl=ttl))
    else:
        print(local.role(args.role, ttl=ttl, subject=args.subject))
    return 0


def version() -> str:
    try:
        return metadata.version("storefront")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _tool_modules(argv: list[str], registered: Container[str]) -> list[str]:
    """The modules of :data:`TOOLS` that `argv` needs: its command's, none for a command
    already `registered`, all of them when there is no command or an unknown one."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in TOOLS:
        return [TOOLS[command]]
    if command in registered:
        return []
    return list(dict.fromkeys(TOOLS.values()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="storefront",
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="install, start everything, load sample data, serve")
    run.add_argument("--run-dir", default=str(RUN_DIR))
    run.add_argument("--no-demo", action="store_true", help="skip the sample data")
    run.add_argument("--detach", action="store_true", help="leave it running and return")
    run.add_argument(
        "--replicas",
        type=int,
        default=1,
        help=f"processes of every service, behind Envoy (1 to {system.MAX_REPLICAS}; "
        f"replica k listens on the declared ports + k*{system.REPLICA_PORT_STRIDE})",
    )
    run.add_argument(
        "--brokers",
        type=int,
        choices=(1, 3),
        default=1,
        help="Kafka brokers: 1, or a KRaft cluster of 3 (replication 3, min.insync.replicas 2)",
    )
    run.add_argument(
        "--console-port", type=int, default=web_console.DEFAULT_PORT, help="operator console"
    )
    run.set_defaults(func=cmd_run)
    demo = sub.add_parser("demo", help="run the sample-data demo against a running system")
    demo.add_argument("--run-dir", default=str(RUN_DIR))
    demo.add_argument(
        "--loop", action="store_true", help="keep gentle traffic through every flow until Ctrl-C"
    )
    demo.add_argument(
        "--interval", type=float, default=2.0, help="with --loop: seconds between rounds (2)"
    )
    demo.set_defaults(func=cmd_demo)
    token = sub.add_parser("token", help="print a bearer token from the local issuer")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer", metavar="ID", help="a customer's token (sub = ID)")
    who.add_argument(
        "--role",
        choices=(STAFF, WAREHOUSE, OPERATOR),
        help="a staff, warehouse or operator (admin service, console actions) token",
    )
    who.add_argument(
        "--console",
        action="store_true",
        help="the operator console's link with an operator token in it, for its actions",
    )
    token.add_argument("--subject", default="", help="with --role: who it names in the logs")
    token.add_argument(
        "--ttl",
        type=int,
        default=0,
        help=f"lifetime in seconds ({DEFAULT_TOKEN_TTL}; --console {web_console.LINK_TTL})",
    )
    token.add_argument(
        "--console-port", type=int, default=web_console.DEFAULT_PORT, help="with --console"
    )
    token.add_argument("--run-dir", default=str(RUN_DIR))
    token.set_defaults(func=cmd_token)
    web_console.register(sub)
    for module in _tool_modules(sys.argv[1:] if argv is None else argv, sub.choices):
        importlib.import_module(module).register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"storefront: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
