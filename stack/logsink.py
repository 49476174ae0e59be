"""Where a supervised process's output goes: a small process reading it from a pipe and
writing it to ``<run_dir>/logs/<name>.log``, so that no log of the run dir grows without bound.

- Rotation by size: past ``STOREFRONT_LOG_MAX_BYTES`` (default 4 MiB) the file becomes
  ``<name>.log.1`` (the older ones shift to ``.2`` ... and the oldest beyond
  ``STOREFRONT_LOG_BACKUPS``, default 3, is dropped), and a new file starts.
- Repeats collapsed: a line of the same *shape* (its digits and hex runs masked, so the same
  error with another timestamp, port or id counts as a repeat) is written at most ``BURST``
  times per ``WINDOW`` seconds; the rest are counted, and when the window ends one line says
  how many were left out, with the last of them. A database outage that makes a server log
  the same error and stack trace hundreds of times a second writes a few lines every 10 s.
- Lines longer than ``MAX_LINE`` bytes are cut, saying how much was left out.

It is started by :class:`stack.procs.Supervisor` in a session of its own (a kill of the
process's group does not take it down before it has written what the process said last),
and exits when every writer of the pipe has closed it. Standard library only, so it starts in
a few tens of milliseconds under ``python -I``. Invoked as
``python -I logsink.py <path>``.
"""

from __future__ import annotations

import os
import re
import select
import sys
import time
from pathlib import Path

MAX_BYTES_ENV = "STOREFRONT_LOG_MAX_BYTES"
BACKUPS_ENV = "STOREFRONT_LOG_BACKUPS"
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_BACKUPS = 3
WINDOW = 10.0
BURST = 5
MAX_LINE = 16 * 1024
MAX_SHAPES = 10_000
"""Shapes remembered per window; past it, new shapes are written and not counted (a stream
of all-different lines has nothing to collapse)."""

_VARYING = re.compile(rb"[0-9a-fA-F]{8,}|[0-9]+")


def shape(line: bytes) -> bytes:
    """What stays of a line when the parts that differ between repeats are masked."""
    return _VARYING.sub(b"#", line[:512])


def setting(env: str, default: int, minimum: int) -> int:
    raw = os.environ.get(env, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"logsink: {env}={raw!r} is not an integer") from None
    if value < minimum:
        raise SystemExit(f"logsink: {env}={value} is below its minimum {minimum}")
    return value


def max_bytes() -> int:
    """The size past which a log file is rotated."""
    return setting(MAX_BYTES_ENV, DEFAULT_MAX_BYTES, minimum=64 * 1024)


class RotatingFile:
    """Appends to ``path``; past ``max_bytes`` shifts it to ``path.1`` and starts anew."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, data: bytes) -> None:
        size = os.fstat(self._fd).st_size  # another writer (the supervisor's banner) may append
        if size and size + len(data) > self.max_bytes:
            self.rotate()
        os.write(self._fd, data)

    def rotate(self) -> None:
        os.close(self._fd)
        for n in range(self.backups, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if n == self.backups:
                older.unlink(missing_ok=True)
            else:
                newer = self.path.with_name(f"{self.path.name}.{n + 1}")
                if older.exists():
                    older.replace(newer)
        if self.backups:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._fd = self._open()

    def close(self) -> None:
        os.close(self._fd)


class Collapser:
    """Decides which lines are written: at most ``burst`` of each shape per window."""

    def __init__(self, out: RotatingFile, window: float = WINDOW, burst: int = BURST) -> None:
        self.out = out
        self.window = window
        self.burst = burst
        self.window_ends = time.monotonic() + window
        self.seen: dict[bytes, int] = {}
        self.left_out: dict[bytes, tuple[int, bytes]] = {}

    def line(self, line: bytes, now: float) -> None:
        if now >= self.window_ends:
            self.flush(now)
        key = shape(line)
        count = self.seen.get(key, 0)
        if count < self.burst:
            if count or len(self.seen) < MAX_SHAPES:
                self.seen[key] = count + 1
            self.out.write(line)
            return
        self.seen[key] = count + 1
        left, _ = self.left_out.get(key, (0, b""))
        self.left_out[key] = (left + 1, line)

    def flush(self, now: float) -> None:
        """End the window: say what was left out in it."""
        for left, last in self.left_out.values():
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self.out.write(
                f"=== {stamp} logsink: {left} more lines like the next one in the last "
                f"{self.window:.0f}s were left out; the last of them:\n".encode()
                + last
            )
        self.seen.clear()
        self.left_out.clear()
        self.window_ends = now + self.window


def cut(line: bytes) -> bytes:
    if len(line) <= MAX_LINE:
        return line
    return line[:MAX_LINE] + f" [... {len(line) - MAX_LINE} bytes left out]\n".encode()


def pump(fd: int, collapser: Collapser) -> None:
    """Copy lines from ``fd`` until every writer closed it."""
    pending = b""
    overflow = 0  # bytes of an overlong line dropped so far (its start was written)
    while True:
        timeout = max(0.0, collapser.window_ends - time.monotonic())
        readable, _, _ = select.select([fd], [], [], timeout)
        now = time.monotonic()
        if not readable:
            collapser.flush(now)
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        if overflow:
            end = chunk.find(b"\n")
            if end < 0:
                overflow += len(chunk)
                continue
            collapser.line(f" [... {overflow + end} more bytes left out]\n".encode(), now)
            chunk, overflow = chunk[end + 1 :], 0
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            collapser.line(cut(line + b"\n"), now)
        if len(pending) > MAX_LINE:  # a line with no end in sight: its start, then skip it
            collapser.line(pending[:MAX_LINE], now)
            overflow, pending = len(pending) - MAX_LINE, b""
    if pending or overflow:
        collapser.line(
            cut(pending) + (f" [... {overflow} more bytes]" if overflow else "").encode() + b"\n",
            time.monotonic(),
        )
    collapser.flush(time.monotonic())


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: logsink.py <log path> (reads standard input)", file=sys.stderr)
        return 2
    out = RotatingFile(Path(argv[1]), max_bytes(), setting(BACKUPS_ENV, DEFAULT_BACKUPS, 0))
    try:
        pump(sys.stdin.fileno(), Collapser(out))
    finally:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
