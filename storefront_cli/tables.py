"""The CLI's output: where a command's lines go, plain-text tables (aligned columns, no
dependencies), and the same data as JSON for scripts (`--json`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence

Log = Callable[[str], None]
"""Where a command or use case writes its lines (`say`, a list's append in tests)."""


def say(msg: str) -> None:
    """A line to stdout, at once (a pipe into `tee` sees it as it happens)."""
    print(msg, flush=True)


def stderr(msg: str) -> None:
    """A progress line kept out of stdout, where `--json` output goes."""
    print(msg, file=sys.stderr, flush=True)


def json_flag(parser: argparse.ArgumentParser, what: str = "one JSON object") -> None:
    parser.add_argument(
        "--json", action="store_true", help=f"print {what} instead of tables (for scripts)"
    )


def json_line(data: object) -> str:
    """`data` as one line of JSON: dataclasses become objects, anything else unknown a string."""
    return json.dumps(data, default=_plain, ensure_ascii=False, separators=(",", ":"))


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


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
