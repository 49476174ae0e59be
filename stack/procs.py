"""A small process supervisor for the local stack (Kafka, FerretDB, the services, Envoy).

Why it exists: the embedded stack runs real servers as plain OS processes, with no Docker and no
systemd. Whoever starts them (``python -m stack up``, a pytest fixture, a fault test) and whoever
stops them later (``python -m stack down``, possibly from another shell) must agree on what is
running, so every process is recorded on disk under a *run directory*::

    <run_dir>/pids/<name>.pid    the pid, as text (for humans and shell tools)
    <run_dir>/pids/<name>.json   how it was started: argv, cwd, env overrides, readiness port,
                                 pid and the kernel start time of the process
    <run_dir>/logs/<name>.log    stdout and stderr of the process (appended across restarts,
                                 rotated by size, repeats collapsed: stack/logsink.py)

Safety rule: a signal is only ever sent to a pid this supervisor recorded, and only while
``/proc/<pid>`` still shows the same process: same kernel start time (so a recycled pid never
matches) and a command line that matches the recorded argv. Anything else is left alone.

Each process is started in its own session (``setsid``), so its pid is also its process-group
id; signals go to the whole group, which also reaches children that wrapper launchers (``uv run``,
shell scripts) leave behind.

Typical use by other code::

    sup = Supervisor(run_dir)
    sup.start("accounts", [sys.executable, "-m", "accounts_svc"], env={"PORT": "50051"},
              ready=50051)                      # waits until 127.0.0.1:50051 accepts
    sup.kill("accounts")                        # SIGKILL, record kept
    sup.restart("accounts")                     # same argv/env/cwd, waits for readiness again
    sup.stop_all()                              # newest first, SIGTERM then SIGKILL
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ReadyCheck = Callable[[], bool]
"""A readiness probe: returns True once the process serves requests. Must not block for long."""

Ready = int | tuple[str, int] | ReadyCheck
"""How to tell a process is ready: a port on 127.0.0.1, a (host, port) pair, or a callable."""

# Popen objects of the processes started by this Python process, so that they can be reaped
# (a dead child stays a zombie, and looks alive in /proc, until its parent waits for it).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

LOGSINK = Path(__file__).with_name("logsink.py")


class ProcessError(RuntimeError):
    """A supervised process failed to start, died, or did not become ready in time."""


@dataclass
class ProcRecord:
    """What the supervisor remembers about one named process (stored as ``pids/<name>.json``)."""

    name: str
    argv: list[str]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    """Environment overrides applied on top of the caller's environment at (re)start time."""
    ready_host: str | None = None
    ready_port: int | None = None
    pid: int | None = None
    starttime: int | None = None
    """Start time of the process in clock ticks since boot (/proc/<pid>/stat field 22)."""
    started_at: float = 0.0
    """Wall-clock time of the (last) start."""
    first_started_at: float = 0.0
    """Wall-clock time of the first start, kept across restarts: ``stop_all`` stops the
    newest first by it, so a broker or database restarted after a crash still stops after
    the services started on it (which otherwise wait on it until their stop times out)."""
    user: str | None = None
    """OS user to run as (PostgreSQL refuses to run as root); None: the caller's user."""


@dataclass(frozen=True)
class ProcStatus:
    """One row of :meth:`Supervisor.status`."""

    name: str
    pid: int | None
    state: str
    """``running``, ``stopped`` (nothing alive) or ``foreign`` (pid now belongs to another
    process, which the supervisor will never touch)."""
    ready_port: int | None
    uptime_s: float | None
    log: Path


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.25) -> bool:
    """True if a TCP connection to ``host:port`` succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tcp_check(port: int, host: str = "127.0.0.1") -> ReadyCheck:
    """A readiness probe that passes once ``host:port`` accepts TCP connections."""
    return lambda: port_open(port, host)


def _read_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), or None if there is no such process.

    The command name (field 2) may contain spaces and parentheses, so split after the last ')'.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (field 4 of /proc/<pid>/stat)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _read_stat(int(entry.name))
            if fields is not None and fields[1] == str(pid):
                out.append(int(entry.name))
    return out


def _starttime(pid: int) -> int | None:
    fields = _read_stat(pid)
    return int(fields[19]) if fields else None


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def _reap(pid: int) -> None:
    """Collect the exit status of our own dead child so it does not linger as a zombie."""
    popen = _CHILDREN.get(pid)
    if popen is not None:
        popen.poll()  # kept in _CHILDREN so a failed start can report the exit status
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _threads(pid: int) -> int:
    """Live thread count of ``pid`` (0 if unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        pass
    return 0


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and has not finished dying (reaping it if it is our child).

    A multi-threaded process (the JVM) shows its leader as a zombie while the other threads
    are still exiting and its sockets are still open, so a zombie only counts as dead once
    it has no other threads left.
    """
    fields = _read_stat(pid)
    if fields is None:
        return False
    if fields[0] in ("Z", "X"):
        if _threads(pid) > 1:
            return True
        _reap(pid)
        return False
    return True


def cmdline_matches(actual: Sequence[str], argv: Sequence[str]) -> bool:
    """Does a /proc cmdline belong to a process started with ``argv``?

    Exact equality is the normal case. Launchers that are scripts (a ``#!`` interpreter, or a
    Python wrapper that re-execs a binary with the same arguments) show up with an extra leading
    interpreter, so we also accept ``actual`` ending with ``argv[1:]`` when the program name of
    ``argv[0]`` appears in what precedes those arguments.
    """
    if list(actual) == list(argv):
        return True
    if not actual or not argv:
        return False
    tail = list(argv[1:])
    if tail and list(actual[-len(tail) :]) != tail:
        return False
    head = actual[: len(actual) - len(tail)] if tail else actual
    program = os.path.basename(argv[0])
    return any(os.path.basename(part) == program for part in head)


def _session_members(sid: int) -> list[int]:
    """Pids whose session id is ``sid`` (used to clean up after a session leader exited)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _read_stat(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


class Supervisor:
    """Starts, checks, stops and restarts named detached processes recorded under ``run_dir``.

    Instances are cheap and stateless apart from the files on disk: any number of
    ``Supervisor(run_dir)`` objects, in any process, see the same set of processes.
    """

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.pids_dir = self.run_dir / "pids"
        self.logs_dir = self.run_dir / "logs"

    # ----- records -------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        """Where the stdout/stderr of process ``name`` goes."""
        return self.logs_dir / f"{name}.log"

    def _json_path(self, name: str) -> Path:
        return self.pids_dir / f"{name}.json"

    def _pid_path(self, name: str) -> Path:
        return self.pids_dir / f"{name}.pid"

    def record(self, name: str) -> ProcRecord | None:
        """The stored record of ``name`` (running or not), or None if it was never started."""
        try:
            data = json.loads(self._json_path(name).read_text())
        except FileNotFoundError:
            return None
        return ProcRecord(**data)

    def _save(self, rec: ProcRecord) -> None:
        self.pids_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._json_path(rec.name).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(rec), indent=2))
        tmp.replace(self._json_path(rec.name))
        if rec.pid is None:
            self._pid_path(rec.name).unlink(missing_ok=True)
        else:
            self._pid_path(rec.name).write_text(f"{rec.pid}\n")

    def names(self) -> list[str]:
        """Names of every process ever recorded in this run dir, newest first start first
        (restarts do not count: see ProcRecord.first_started_at)."""
        if not self.pids_dir.is_dir():
            return []
        recs = [r for p in self.pids_dir.glob("*.json") if (r := self.record(p.stem))]
        first = sorted(recs, key=lambda r: r.first_started_at or r.started_at, reverse=True)
        return [r.name for r in first]

    def _owned(self, rec: ProcRecord | None) -> bool:
        """True only if ``rec.pid`` is alive and is still the very process we started."""
        if rec is None or rec.pid is None or not pid_alive(rec.pid):
            return False
        if _starttime(rec.pid) != rec.starttime:
            return False
        cmd = _cmdline(rec.pid)
        # Right after exec the kernel may show an empty cmdline for a moment; the matching
        # start time already proves it is the process we started.
        return cmd is not None and (not cmd or cmdline_matches(cmd, rec.argv))

    def pid(self, name: str) -> int | None:
        """The pid of ``name`` if it is running (and verifiably ours), else None."""
        rec = self.record(name)
        return rec.pid if rec is not None and self._owned(rec) else None

    def is_running(self, name: str) -> bool:
        """True if ``name`` is running and verifiably the process this supervisor started."""
        return self.pid(name) is not None

    def status(self) -> list[ProcStatus]:
        """State of every recorded process, newest first (what ``python -m stack status`` shows)."""
        rows = []
        for name in self.names():
            rec = self.record(name)
            assert rec is not None
            if self._owned(rec):
                state, uptime = "running", time.time() - rec.started_at
            elif rec.pid is not None and pid_alive(rec.pid):
                state, uptime = "foreign", None
            else:
                state, uptime = "stopped", None
            rows.append(
                ProcStatus(
                    name=name,
                    pid=rec.pid if state == "running" else None,
                    state=state,
                    ready_port=rec.ready_port,
                    uptime_s=uptime,
                    log=self.log_path(name),
                )
            )
        return rows

    def tail(self, name: str, lines: int = 40) -> str:
        """The last ``lines`` lines of the log of ``name`` (empty string if there is none)."""
        try:
            with self.log_path(name).open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 64 * 1024))
                data = fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(data.splitlines()[-lines:])

    # ----- start / readiness ---------------------------------------------------------------

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        ready: Ready | None = None,
        timeout: float = 60.0,
        wait: bool = True,
        user: str | None = None,
    ) -> ProcRecord:
        """Start ``argv`` detached as process ``name`` and wait until it is ready.

        ``env`` overrides/extends the current environment; ``cwd`` defaults to the run dir.
        ``ready`` is a port on 127.0.0.1, a ``(host, port)`` pair or a callable returning True
        once ready; ports are remembered so :meth:`restart` can wait on them again. Without
        ``ready`` (or with ``wait=False``, to start several processes and then call
        :meth:`wait_ready` on each) the call returns as soon as the program has been exec'd.

        Raises :class:`ProcessError` (with the log tail) if ``name`` is already running, if the
        process exits, or if it is not ready within ``timeout`` seconds; in the last two cases
        the process group is killed first so nothing half-started is left behind.
        ``user`` runs the program as that OS user (only root can switch).
        """
        if self.is_running(name):
            raise ProcessError(f"{name} is already running (pid {self.pid(name)})")
        host, port, check = _split_ready(ready)
        rec = ProcRecord(
            name=name,
            argv=[str(a) for a in argv],
            cwd=str(Path(cwd).resolve()) if cwd is not None else str(self.run_dir),
            env=dict(env or {}),
            ready_host=host,
            ready_port=port,
            user=user,
        )
        self._spawn(rec)
        if check is not None and wait:
            self.wait_ready(name, check, timeout)
        return rec

    def _spawn(self, rec: ProcRecord, port_grace: float = 0.0) -> None:
        if rec.ready_port is not None:
            # A port that already accepts connections would make the readiness check pass
            # against some other process; after a kill, give the kernel a moment to close it.
            host = rec.ready_host or "127.0.0.1"
            deadline = time.monotonic() + port_grace
            while port_open(rec.ready_port, host):
                if time.monotonic() > deadline:
                    raise ProcessError(
                        f"cannot start {rec.name}: {host}:{rec.ready_port} is already in use "
                        "by another process"
                    )
                time.sleep(0.1)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        Path(rec.cwd).mkdir(parents=True, exist_ok=True)
        log = self.log_path(rec.name)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"\n=== {stamp} supervisor: starting {rec.name}: {rec.argv}\n".encode())
        finally:
            os.close(fd)
        # The output goes through a pipe to a log sink (rotation by size, repeats collapsed:
        # stack/logsink.py), which outlives a kill of the process's group to write its last
        # words and exits when the pipe's last writer is gone.
        read_end, write_end = os.pipe()
        try:
            try:
                subprocess.Popen(
                    [sys.executable, "-I", str(LOGSINK), str(log)],
                    stdin=read_end,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                    close_fds=True,
                )
                popen = subprocess.Popen(
                    rec.argv,
                    cwd=rec.cwd,
                    env={**os.environ, **rec.env},
                    stdin=subprocess.DEVNULL,
                    stdout=write_end,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    **as_user(rec.user),
                )
            except OSError as exc:
                raise ProcessError(f"cannot start {rec.name}: {exc}") from exc
        finally:
            os.close(read_end)
            os.close(write_end)
        # Popen returns only after the exec succeeded, so /proc already shows the new program.
        _CHILDREN[popen.pid] = popen
        rec.pid = popen.pid
        rec.starttime = _starttime(popen.pid)
        rec.started_at = time.time()
        rec.first_started_at = rec.first_started_at or rec.started_at
        self._save(rec)

    def wait_ready(self, name: str, ready: Ready, timeout: float = 60.0) -> float:
        """Poll ``ready`` until it passes; return the seconds waited.

        Fails fast if the process exits meanwhile. On failure the process is killed (so a
        broken start leaves nothing behind) and :class:`ProcessError` shows the log tail.
        """
        _, _, check = _split_ready(ready)
        assert check is not None
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            if not self.is_running(name):
                rec = self.record(name)
                popen = _CHILDREN.get(rec.pid) if rec and rec.pid else None
                code = popen.poll() if popen is not None else None
                time.sleep(0.2)  # the log sink writes the process's last words
                raise ProcessError(
                    f"{name} exited during startup (exit status {code}); last lines of "
                    f"{self.log_path(name)}:\n{self.tail(name)}"
                )
            if check():
                return time.monotonic() - t0
            if time.monotonic() > deadline:
                self.stop(name, timeout=5.0)
                raise ProcessError(
                    f"{name} not ready after {timeout:.0f}s (killed); last lines of "
                    f"{self.log_path(name)}:\n{self.tail(name)}"
                )
            time.sleep(0.1)

    # ----- signals / stop ------------------------------------------------------------------

    def kill(self, name: str, sig: int = signal.SIGKILL) -> bool:
        """Send ``sig`` to the process group of ``name`` if it is verifiably ours.

        The record is kept, so :meth:`restart` can bring the same process back (this is what
        fault tests use to crash the broker). Returns False if nothing was signalled.
        """
        rec = self.record(name)
        if rec is None or rec.pid is None or not self._owned(rec):
            return False
        # Children that left the group (PostgreSQL's backends each call setsid) outlive the
        # signal for a moment, still holding what the next start needs (the old shared memory
        # block: "pre-existing shared memory block is still in use"); they exit on their own
        # once they see their parent gone, and a restart waits for that.
        children = _children(rec.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(rec.pid, sig)
        if sig == signal.SIGKILL:
            self._wait_gone(rec.pid, 5.0)
            for child in children:
                self._wait_gone(child, 10.0)
        return True

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, name: str, timeout: float = 15.0) -> bool:
        """Stop ``name``: SIGTERM to its group, wait up to ``timeout`` s, then SIGKILL.

        Only a process that is verifiably ours is signalled; a stale record is just cleared.
        Returns True if a running process was stopped.
        """
        rec = self.record(name)
        if rec is None:
            return False
        stopped = False
        if rec.pid is not None and self._owned(rec):
            pid = rec.pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            if not self._wait_gone(pid, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self._wait_gone(pid, 5.0)
            stopped = True
            # We just saw our own leader exit. Its pid number cannot be reused while its session
            # still has members, so anything left in that session is a leftover child of ours
            # (one that ignored SIGTERM or moved to another process group).
            for member in _session_members(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member, signal.SIGKILL)
        rec.pid = None
        rec.starttime = None
        self._save(rec)
        return stopped

    def stop_all(self, timeout: float = 15.0) -> list[str]:
        """Stop every recorded process, newest first; return the names that were running."""
        return [name for name in self.names() if self.stop(name, timeout)]

    def restart(
        self, name: str, *, timeout: float = 60.0, ready: Ready | None = None
    ) -> ProcRecord:
        """Stop ``name`` if running, then start it again exactly as recorded.

        Waits on ``ready`` if given, else on the recorded readiness port (if any).
        """
        rec = self.record(name)
        if rec is None:
            raise ProcessError(f"{name} was never started in {self.run_dir}")
        self.stop(name)
        self._spawn(rec, port_grace=10.0)
        if ready is None and rec.ready_port is not None:
            ready = (rec.ready_host or "127.0.0.1", rec.ready_port)
        if ready is not None:
            self.wait_ready(name, ready, timeout)
        return rec


def as_user(user: str | None) -> dict[str, Any]:
    """Popen keyword arguments that run a child as ``user`` with only that user's groups."""
    if user is None:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _split_ready(ready: Ready | None) -> tuple[str | None, int | None, ReadyCheck | None]:
    """Normalise a ``Ready`` value into (host, port, check)."""
    if ready is None:
        return None, None, None
    if isinstance(ready, bool):
        raise TypeError("ready must be a port, a (host, port) pair or a callable")
    if isinstance(ready, int):
        return "127.0.0.1", ready, tcp_check(ready)
    if isinstance(ready, tuple):
        host, port = ready
        return host, port, tcp_check(port, host)
    return None, None, ready
