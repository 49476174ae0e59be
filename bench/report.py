"""The benchmark's table: every scenario's figures beside its ceiling and target."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import topology
from bench import cpu, growth


def fmt_rps(r: dict[str, Any]) -> str:
    return f"{r['rps']:,.0f} rps, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms"


def fmt_ms(ms: float | None) -> str:
    return "not reached" if ms is None else f"{ms:.1f} ms"


def table(report: dict[str, Any]) -> str:
    s = report["scenarios"]
    rows: list[tuple[str, str, str, str, str]] = []

    def row(name: str, figure: str, ceiling: str, ratio_: str) -> None:
        r = s.get(name, {})
        met = r.get("met")
        verdict = "error" if "error" in r else ("yes" if met else "NO" if met is False else "-")
        verdict = "skipped" if "skipped" in r else verdict
        rows.append((name, figure, ceiling, ratio_, f"{r.get('target', '')} : {verdict}"))

    def safe(fn: Callable[[], tuple[str, str, str]], name: str) -> None:
        if "skipped" in s.get(name, {}):
            row(name, "skipped", "", "")
            return
        if "error" in s.get(name, {}):
            row(name, "error: " + s[name]["error"][:60], "", "")
            return
        try:
            row(name, *fn())
        except (KeyError, TypeError) as exc:
            row(name, f"incomplete ({exc})", "", "")

    c = s.get("ceilings", {})

    def ceilings() -> tuple[str, str, str]:
        return (
            f"bare gRPC Get {c['bare_grpc_get']['rps']:,.0f} rps, "
            f"Create {c['bare_grpc_create']['rps']:,.0f} rps",
            f"raw find_one {c['raw_find_one']['rps']:,.0f}/s, "
            f"insert_one {c['raw_insert_one']['rps']:,.0f}/s, "
            f"insert+find+$pull {c['raw_outbox_write']['rps']:,.0f}/s",
            "",
        )

    if "skipped" in c:
        rows.append(("ceilings", "skipped", "", "", ""))
    elif "error" in c:
        rows.append(("ceilings", "error: " + c["error"][:60], "", "", ""))
    else:
        try:
            rows.append(("ceilings", *ceilings(), ""))
        except (KeyError, TypeError) as exc:
            rows.append(("ceilings", f"incomplete ({exc})", "", "", ""))
    safe(
        lambda: (
            fmt_rps(s["get_customer"]),
            f"{s['get_customer']['ceiling_rps']:,.0f} rps (serial: 1/(1/bare + 1/raw find_one));"
            f" bare gRPC + find_one in one process {s['get_customer']['bare_find_rps']:,.0f} rps",
            f"{s['get_customer']['ratio']:.2f} ({s['get_customer']['ratio_to_bare_find']:.2f})",
        ),
        "get_customer",
    )
    safe(
        lambda: (
            fmt_rps(s["create_customer"]),
            f"outbox floor {s['create_customer']['outbox_floor_rps']:,.0f} rps "
            f"(serial with bare: {s['create_customer']['ceiling_rps']:,.0f} rps)",
            f"{s['create_customer']['ratio_to_outbox_floor']:.2f} "
            f"({s['create_customer']['ratio']:.2f})",
        ),
        "create_customer",
    )
    safe(
        lambda: (
            fmt_rps(s["json_via_envoy"]),
            f"gRPC direct {s['json_via_envoy']['grpc_direct_rps']:,.0f} rps",
            f"{s['json_via_envoy']['ratio']:.2f}",
        ),
        "json_via_envoy",
    )
    safe(
        lambda: (
            f"at {report['settings']['update_rate']}/s offered: "
            f"p50 {s['propagation']['p50_ms']:.1f} ms, p99 {s['propagation']['p99_ms']:.1f} ms "
            f"({s['propagation']['within_100ms']:.1%} <= 100 ms); p99 at 100/s "
            f"{fmt_ms(s['propagation'].get('p99_ms_at_100'))}",
            f"{s['propagation']['update_rps']:.0f} updates/s served, "
            f"{s['propagation']['events_applied']:.0f} applied; "
            f"raw update_one {s['propagation']['raw_update_one_rps']:,.0f}/s; raw floor of an "
            f"update {s['propagation'].get('raw_floor_rps', 0):,.0f}/s; p99 <= 250 ms "
            f"up to {s['propagation']['highest_rate_p99_within_250ms']}/s",
            "",
        ),
        "propagation",
    )
    safe(
        lambda: (
            f"{s['catch_up']['events_per_s']:,.0f} events/s "
            f"({s['catch_up']['events']:,} in {s['catch_up']['seconds']:.1f} s)",
            f"raw {s['catch_up']['ceiling_events_per_s']:,.0f} events/s",
            f"{s['catch_up']['ratio']:.2f}",
        ),
        "catch_up",
    )
    safe(
        lambda: (
            f"{s['catch_up_large']['events_per_s']:,.0f} events/s "
            f"({s['catch_up_large']['events']:,} in {s['catch_up_large']['seconds']:.1f} s)",
            f"{s['catch_up_large']['events_per_s_small']:,.0f} events/s with "
            f"{s['catch_up']['events']:,}",
            f"{s['catch_up_large']['ratio_to_small']:.2f}",
        ),
        "catch_up_large",
    )
    g = s.get("growth", {})
    if "skipped" in g:
        rows.append(("growth", "skipped", "", "", ""))
    elif "error" in g:
        rows.append(("growth", "error: " + g["error"][:60], "", "", ""))
    else:
        try:
            rows.extend(growth.rows(g))
        except (KeyError, TypeError) as exc:
            rows.append(("growth", f"incomplete ({exc})", "", "", ""))
    safe(
        lambda: (
            ", ".join(f"{n} {s['memory'][n]['rss_mb']:.0f} MiB" for n in topology.SYSTEM.names),
            "",
            "",
        ),
        "memory",
    )
    header = ("scenario", "figure", "ceiling / baseline", "ratio", "target : met")
    return "\n\n".join([_markdown(header, rows), cpu_table(s)])


def cpu_table(s: dict[str, Any]) -> str:
    """CPU milliseconds per call by process (bench.cpu), for every measurement that has them:
    the ceilings, the reads, propagation and its raw floor (per update) and each growth
    operation's kept round at both sizes. A process that spent nothing in any of them gets no
    column."""
    measured: list[tuple[str, dict[str, float]]] = []
    for name, r in s.get("ceilings", {}).items():
        measured.append((f"ceiling {name}", r.get("cpu_ms_per_call", {})))
    for name in ("get_customer", "create_customer"):
        measured.append((name, s.get(name, {}).get("cpu_ms_per_call", {})))
    propagation = s.get("propagation", {})
    measured.append(("propagation, per update", propagation.get("cpu_ms_per_update", {})))
    measured.append(
        ("propagation's raw floor, per update", propagation.get("raw_floor_cpu_ms_per_update", {}))
    )
    for name, r in s.get("growth", {}).items():
        for label in ("small", "large"):
            if isinstance(r, dict) and label in r:
                at = f"growth {name} with {r[label]['stored']:,}"
                measured.append((at, r[label].get("cpu_ms_per_call", {})))
    measured = [(name, per_call) for name, per_call in measured if per_call]
    if not measured:
        return ""
    columns: list[str] = []
    for _, per_call in measured:
        columns += [p for p, ms in per_call.items() if ms >= 0.01 and p not in columns]
    columns.sort(key=lambda p: (p == cpu.MACHINE, p == cpu.CLIENT))  # client, machine last
    rows = [
        (name, *(f"{per_call.get(p, 0.0):.2f}" for p in columns)) for name, per_call in measured
    ]
    return _markdown(("CPU ms per call", *columns), rows)


def _markdown(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        padded = (cell.ljust(w) for cell, w in zip(cells, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])
