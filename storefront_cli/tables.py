"""The CLI's output: where a command's lines go, and plain-text tables (aligned columns, no
dependencies)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

Log = Callable[[str], None]
"""Where a command or use case writes its lines (`say`, a list's append in tests)."""


def say(msg: str) -> None:
    """A line to stdout, at once (a pipe into `tee` sees it as it happens)."""
    print(msg, flush=True)


def render(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str = "") -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join("-" * w for w in widths)
    out = [title] if title else []
    out.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    out.append(line)
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)
