"""bench.cpu: a process's CPU time counted with its descendants, some of them apart by title."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bench import cpu

BURN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"
SPIN = "while True: pass"


def test_descendants_count_under_their_root_and_a_titled_one_apart() -> None:
    # A parent that idles with two children burning CPU; one is told apart by its title.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {SPIN!r}, 'plain'])\n"
            f"subprocess.Popen([sys.executable, '-c', {SPIN!r}, 'upkeep'])\n"
            "time.sleep(60)\n",
        ],
        start_new_session=True,
    )
    roots = {"parent": parent.pid}
    apart: cpu.Apart = {"upkeep": lambda title: title.rstrip().endswith(" upkeep")}
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not _children_spinning(parent.pid):
            time.sleep(0.05)
        before = cpu.tree_seconds(roots, apart)
        time.sleep(1.0)
        after = cpu.tree_seconds(roots, apart)
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    plain = after["parent"] - before["parent"]
    upkeep = after["upkeep"] - before["upkeep"]
    assert plain > 0.1 and upkeep > 0.1, (plain, upkeep)
    # Each second of CPU counted once: two spinning processes over one second, at most.
    assert plain + upkeep <= 2.3, (plain, upkeep)


def _children_spinning(pid: int) -> bool:
    titles = [cpu.title_of(p) for p in _descendants(pid)]
    return sum(t.rstrip().endswith((" plain", " upkeep")) for t in titles) == 2


def _descendants(pid: int) -> list[int]:
    return [child for child, (parent, _) in cpu.stats().items() if parent == pid]


def test_per_call_divides_by_the_calls_and_counts_the_client_and_the_machine() -> None:
    def run() -> int:
        subprocess.run([sys.executable, "-c", BURN.format(s=0.2)], check=True)
        return 4

    calls, per_call = cpu.per_call({"self": os.getpid()}, run, lambda n: n)
    assert calls == 4
    # 0.2 s of a waited-for child over 4 calls: about 50 ms each, as the client and in the tree.
    assert 45 <= per_call[cpu.CLIENT] <= 200, per_call
    assert per_call["self"] >= 45 and per_call[cpu.MACHINE] >= 45, per_call
