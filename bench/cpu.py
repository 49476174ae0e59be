"""CPU time spent by each process of the system during a measurement, per call.

A rate says how fast; this says where a call's cost went: the service, FerretDB, PostgreSQL
(the postmaster and all its backends), Kafka. A process's time is read from /proc as that of
its whole tree (every live descendant's user + system time, plus what its reaped children left
in it), so PostgreSQL's backends count even when one exits during the window.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
TICKS = os.sysconf("SC_CLK_TCK")
MACHINE = "machine"
CLIENT = "client"


def stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of it and its reaped children), for every process."""
    out: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is state (stat field 3): utime..cstime are stat fields 14-17.
        out[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / TICKS)
    return out


def title_of(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


Apart = Mapping[str, Callable[[str], bool]]
"""Labels of their own for some descendants: label -> test of a process's command line (a
process that passes one, with its own descendants, counts there, not under its root)."""


def tree_seconds(roots: Mapping[str, int], apart: Apart | None = None) -> dict[str, float]:
    """CPU seconds used so far by each named process and its descendants."""
    now = stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in now.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[str, float] = {label: 0.0 for label in apart or {}}
    for name, root in roots.items():
        out.setdefault(name, 0.0)
        todo = [(root, name)]
        while todo:
            pid, label = todo.pop()
            if pid not in now:
                continue
            if apart and pid != root:
                title = title_of(pid)
                label = next((a for a, test in apart.items() if test(title)), label)
            out[label] += now[pid][1]
            todo.extend((child, label) for child in children.get(pid, ()))
    return out


def machine_seconds() -> float:
    """CPU seconds every core has spent busy (not idle or waiting for I/O) since boot."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / TICKS


def client_seconds() -> float:
    """CPU seconds of this process's children that have exited: the load generator or client
    (ghz, wrk, bench.raw) of a run, which exits before its figures are read."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _snapshot(roots: Mapping[str, int], apart: Apart | None) -> dict[str, float]:
    return {**tree_seconds(roots, apart), CLIENT: client_seconds(), MACHINE: machine_seconds()}


def per_call(
    roots: Mapping[str, int],
    run: Callable[[], T],
    calls: Callable[[T], int],
    apart: Apart | None = None,
) -> tuple[T, dict[str, float]]:
    """Run `run` and return its result with each named process's CPU milliseconds per call
    (`calls` of the result) during it, the load generator's or client's under CLIENT (the
    children that `run` started and waited for), and the whole machine's under MACHINE."""
    before = _snapshot(roots, apart)
    result = run()
    after = _snapshot(roots, apart)
    n = max(1, calls(result))
    return result, {name: round((after[name] - before[name]) * 1000 / n, 3) for name in after}
