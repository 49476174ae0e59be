"""The supervisor's log sink: what a process writes reaches its log, bounded in size, with
repeats collapsed, and its last words survive a SIGKILL of its group."""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path

import pytest

from stack import logsink
from stack.procs import Supervisor


def _wait_for(path: Path, needle: bytes, timeout: float = 20.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = path.read_bytes() if path.exists() else b""
        if needle in data:
            return data
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in {path} after {timeout}s")


def _run(sup: Supervisor, name: str, code: str) -> None:
    sup.start(name, [sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while sup.is_running(name) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_an_error_repeated_thousands_of_times_is_written_a_few_times_and_counted(
    tmp_path: Path,
) -> None:
    sup = Supervisor(tmp_path)
    code = (
        "import sys\n"
        "for i in range(20000):\n"
        "    print(f'2026-12-03T05:00:{i % 60:02d} ERROR Acquire conn {i}: refused', flush=False)\n"
        "print('the end')\n"
    )
    _run(sup, "spammer", code)
    data = _wait_for(sup.log_path("spammer"), b"the end")
    data = _wait_for(sup.log_path("spammer"), b"were left out")
    kept = len(re.findall(rb"(?m)^2026-12-03T05:00:\d\d ERROR Acquire", data))
    left = sum(int(n) for n in re.findall(rb"logsink: (\d+) more lines", data))
    assert kept <= 2 * logsink.BURST + 1  # the bursts, and the last left-out line quoted
    assert (kept - data.count(b"were left out")) + left == 20000
    assert len(data) < 4096


def test_logs_rotate_by_size_and_keep_a_bounded_number_of_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(logsink.MAX_BYTES_ENV, str(64 * 1024))
    monkeypatch.setenv(logsink.BACKUPS_ENV, "2")
    sup = Supervisor(tmp_path)
    # Lines of all-different shapes (nothing to collapse), about 1 MB in all.
    code = (
        "import random, string\n"
        "r = random.Random(1)\n"
        "for i in range(10000):\n"
        "    print(''.join(r.choice(string.ascii_letters) for _ in range(100)))\n"
        "print('LAST LINE')\n"
    )
    _run(sup, "chatty", code)
    log = sup.log_path("chatty")
    _wait_for(log, b"LAST LINE")
    files = sorted(tmp_path.joinpath("logs").glob("chatty.log*"))
    assert [f.name for f in files] == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    assert all(f.stat().st_size <= 64 * 1024 for f in files)


def test_an_endless_line_is_cut(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    _run(sup, "wide", "print('x' * 5_000_000 + ' tail')\nprint('after')")
    data = _wait_for(sup.log_path("wide"), b"after")
    assert len(data) < 3 * logsink.MAX_LINE
    assert b"bytes left out" in data


def test_last_words_before_a_sigkill_reach_the_log(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    code = "import time\nprint('about to hang', flush=True)\ntime.sleep(600)\n"
    sup.start("victim", [sys.executable, "-c", code])
    _wait_for(sup.log_path("victim"), b"about to hang")
    assert sup.kill("victim", signal.SIGKILL)
    sup.restart("victim")
    data = _wait_for(sup.log_path("victim"), b"about to hang", 5)
    assert data.count(b"supervisor: starting victim") == 2
    sup.stop_all()


def test_a_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logsink.MAX_BYTES_ENV, "lots")
    with pytest.raises(SystemExit, match=logsink.MAX_BYTES_ENV):
        logsink.setting(logsink.MAX_BYTES_ENV, 1, 1)
