"""`storefront run` in the foreground: keep every process up, and take them all down with it.

Why: the processes run in their own sessions (so a supervisor record can signal exactly them),
which also means nothing stops or restarts them when `storefront run` itself goes away. Found
running the system as a new user would: a SIGKILLed service stayed DOWN unnoticed, and Ctrl-C
under `make run | tee run.log` left all nine processes running (the first "stopping" line hit
the pipe `tee` had just closed, and the exception ended the run before anything was stopped).

- A process that exits is restarted with backoff (1 s, 2 s, ... 30 s) and a line each time; one
  that crashes `max_crashes` times within `window` seconds is given up on, and the run says so.
- SIGINT, SIGTERM, SIGHUP, or the output pipe closing (its reader is gone) stop everything.
  Writing to a closed pipe never raises here.
- `<run_dir>/run.pid` names the run that owns the run dir: a second `storefront run` refuses
  while it lives, and a later run stops whatever a run that died left behind.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stack.procs import ProcessError, Supervisor, pid_alive

Say = Callable[[str], None]


class Output:
    """Progress lines to stdout that notice, and survive, their reader going away."""

    def __init__(self) -> None:
        self.closed = False
        self._poll: select.poll | None = None
        with contextlib.suppress(OSError, ValueError):
            if stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode):
                self._poll = select.poll()
                self._poll.register(sys.stdout.fileno(), 0)  # only POLLERR / POLLHUP

    def say(self, msg: str) -> None:
        if self.closed:
            return
        try:
            print(msg, flush=True)
        except (BrokenPipeError, OSError, ValueError):
            self.closed = True

    def reader_gone(self) -> bool:
        """True once nobody reads our output (the other end of the pipe is closed)."""
        if self._poll is not None and not self.closed:
            for _, events in self._poll.poll(0):
                if events & (select.POLLERR | select.POLLHUP):
                    self.closed = True
        return self.closed


@dataclass
class _Crashes:
    times: list[float] = field(default_factory=list)
    next_try: float = 0.0


class Watchdog:
    """Restarts the named processes of a Supervisor when they exit."""

    def __init__(
        self,
        sup: Supervisor,
        names: list[str],
        say: Say,
        *,
        max_crashes: int = 5,
        window: float = 120.0,
        backoff_max: float = 30.0,
        restart_timeout: float = 90.0,
    ) -> None:
        self.sup = sup
        self.names = list(names)
        self.say = say
        self.max_crashes = max_crashes
        self.window = window
        self.backoff_max = backoff_max
        self.restart_timeout = restart_timeout
        self.given_up: list[str] = []
        self._crashes: dict[str, _Crashes] = {n: _Crashes() for n in names}

    def check(self, now: float | None = None) -> None:
        """One round: restart whatever is due; give up on what keeps crashing."""
        now = time.monotonic() if now is None else now
        for name in list(self.names):
            if self.sup.is_running(name):
                continue
            crashes = self._crashes[name]
            if now < crashes.next_try:
                continue
            crashes.times = [t for t in crashes.times if now - t < self.window] + [now]
            if len(crashes.times) > self.max_crashes:
                self.names.remove(name)
                self.given_up.append(name)
                self.say(
                    f"[run] {name} exited {len(crashes.times)} times in {self.window:.0f}s; "
                    f"giving up on it (log: {self.sup.log_path(name)})"
                )
                continue
            delay = min(self.backoff_max, 2.0 ** (len(crashes.times) - 1))
            self.say(f"[run] {name} exited; restarting it (attempt {len(crashes.times)})")
            try:
                self.sup.restart(name, timeout=self.restart_timeout)
                self.say(f"[run] {name} is back")
            except ProcessError as exc:
                crashes.next_try = now + delay
                self.say(f"[run] {name} did not come back: {str(exc).splitlines()[0]}")


def claim_run_dir(run_dir: Path, sup: Supervisor, say: Say) -> None:
    """Make this process the run dir's owner; stop what a dead earlier run left running.

    Raises ProcessError if another live `storefront run` owns it."""
    marker = run_dir / "run.pid"
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError, ValueError):
        owner = int(marker.read_text().split()[0])
        if owner != os.getpid() and pid_alive(owner):
            raise ProcessError(
                f"another `storefront run` (pid {owner}) owns {run_dir}; stop it first "
                "(Ctrl-C there, or `make down`)"
            )
        leftovers = [n for n in sup.names() if sup.is_running(n)]
        if leftovers:
            say(f"[run] an earlier run (pid {owner}) died leaving {', '.join(leftovers)}; stopping")
            sup.stop_all()
    marker.write_text(f"{os.getpid()}\n")


def release_run_dir(run_dir: Path) -> None:
    marker = run_dir / "run.pid"
    with contextlib.suppress(FileNotFoundError, ValueError):
        if int(marker.read_text().split()[0]) == os.getpid():
            marker.unlink()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopSignals:
    """Catches SIGINT, SIGTERM and SIGHUP from the moment it is made (a run asked to stop
    while it is still starting stops everything once the start returns, instead of dying
    and leaving its processes behind); ``reason`` names the first one."""

    def __init__(self) -> None:
        self.reason = ""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._caught)

    def _caught(self, signum: int, frame: object) -> None:
        self.reason = self.reason or signal.Signals(signum).name


def serve_until_stopped(
    watchdog: Watchdog, output: Output, stop: StopSignals, *, interval: float = 0.5
) -> str:
    """Watch until a stop signal or the output's reader goes; returns why it stopped."""
    while not stop.reason:
        if output.reader_gone():
            return "output closed"
        watchdog.check()
        time.sleep(interval)
    return stop.reason
