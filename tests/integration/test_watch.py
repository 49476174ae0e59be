"""`storefront run`'s watch (issue 12 finding 7): restarts what exits, gives up on a crash loop,
stops everything on SIGHUP or a closed output pipe, and cleans up after a run that died."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from stack.procs import ProcessError, Supervisor
from stack.tools import REPO_ROOT as ROOT
from storefront_cli import watch

pytestmark = pytest.mark.integration

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def test_a_killed_process_is_restarted_and_a_crash_loop_given_up(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    sup.start("sleeper", SLEEPER)
    sup.start("crasher", [sys.executable, "-c", "raise SystemExit(3)"], wait=False)
    lines: list[str] = []
    dog = watch.Watchdog(sup, ["sleeper", "crasher"], lines.append, max_crashes=2, window=60)
    try:
        first = sup.pid("sleeper")
        assert sup.kill("sleeper")
        for i in range(12):  # the crasher exits at once every time
            dog.check(now=time.monotonic() + 5 * i)
            if dog.given_up:
                break
            time.sleep(0.3)  # let it exit again
        assert sup.is_running("sleeper") and sup.pid("sleeper") != first
        assert "sleeper is back" in "\n".join(lines)
        assert dog.given_up == ["crasher"]
        assert any("crasher exited 3 times" in line and "giving up" in line for line in lines)
    finally:
        sup.stop_all(timeout=2)


def test_a_second_run_is_refused_and_a_dead_runs_leftovers_are_stopped(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    (tmp_path / "run.pid").write_text(f"{os.getppid()}\n")  # a live owner: our parent
    with pytest.raises(ProcessError, match="another `storefront run`"):
        watch.claim_run_dir(tmp_path, sup, print)

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run.pid").write_text(f"{dead.pid}\n")
    sup.start("leftover", SLEEPER)
    lines: list[str] = []
    watch.claim_run_dir(tmp_path, sup, lines.append)
    assert not sup.is_running("leftover")
    assert "died leaving leftover" in lines[0]
    assert (tmp_path / "run.pid").read_text().strip() == str(os.getpid())
    watch.release_run_dir(tmp_path)
    assert not (tmp_path / "run.pid").exists()


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from stack.procs import Supervisor
    from storefront_cli import watch

    stop = watch.StopSignals()
    sup = Supervisor(Path(sys.argv[1]))
    sup.start("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"])
    out = watch.Output()
    out.say("ready")
    dog = watch.Watchdog(sup, ["sleeper"], out.say)
    reason = watch.serve_until_stopped(dog, out, stop, interval=0.1)
    out.say("stopping")  # must not raise, whatever happened to the pipe
    sup.stop_all(timeout=2)
    Path(sys.argv[1], "reason").write_text(reason)
    """
)


def _run_child(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    pid = Supervisor(tmp_path).pid("sleeper")
    assert pid is not None
    return child, pid


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.mark.parametrize("how", ["SIGHUP", "output closed"])
def test_everything_stops_on_hangup_or_a_closed_output_pipe(tmp_path: Path, how: str) -> None:
    child, sleeper = _run_child(tmp_path)
    if how == "SIGHUP":
        os.kill(child.pid, signal.SIGHUP)
    else:
        assert child.stdout is not None
        child.stdout.close()  # `tee` went away
    assert child.wait(timeout=30) == 0
    assert (tmp_path / "reason").read_text() == how
    deadline = time.monotonic() + 10
    while not _gone(sleeper) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(sleeper)
