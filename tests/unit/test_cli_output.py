"""The CLI's `--json` prints the very data its tables show, and its version and exit codes
are stated (the commands themselves against a running system: tests/e2e/test_ops.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord

import topology
from storefront.accounts.v1 import events_pb2
from storefront_cli import check, status, tail
from storefront_cli.health import Health
from storefront_cli.main import main as storefront
from storefront_cli.offsets import DeadLetters, Lag
from storefront_cli.replays import ParkedRow
from storefront_cli.tables import json_line
from svckit import names
from svckit.envelope import encode

REPO = Path(__file__).resolve().parents[2]

SNAPSHOT = status.Snapshot(
    health=[
        Health("kafka", "127.0.0.1:9092", True, "1 broker"),
        Health("orders_svc", "127.0.0.1:50052", False, "UNAVAILABLE"),
        Health("prometheus", "http://127.0.0.1:9090", False, "refused", required=False),
    ],
    lags=[Lag("storefront-orders", topology.CUSTOMER_CHANGES, 0, None, 7, 7)],
    dead_letters=[DeadLetters(names.dlq_topic(topology.CUSTOMER_CHANGES, "orders-svc"), 2, 1)],
    backlog=[status.Backlog("orders", "customer.orders", 1, 3, 12.5)],
    unavailable={},
)


def table_rows(text: str, first: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.startswith(first + " ")]


def test_status_json_holds_every_row_of_the_tables() -> None:
    lines: list[str] = []
    status.show(SNAPSHOT, lines.append)
    text = "\n".join(lines)
    [data] = [json.loads(json_line(SNAPSHOT.data()))]
    assert data["ok"] is False  # orders_svc is down; prometheus is optional
    for h in data["health"]:
        [row] = table_rows(text, h["part"])
        assert row[1] == h["endpoint"] and h["detail"].split()[0] in row
        assert ("UP" in row) == h["ok"]
    [lag] = data["lags"]
    assert table_rows(text, lag["group"]) == [
        [lag["group"], lag["topic"], str(lag["partition"]), "-", str(lag["end"]), str(lag["lag"])]
    ]
    assert lag["committed"] is None  # "-" in the table, null in JSON
    [dlq] = data["dead_letters"]
    assert table_rows(text, dlq["topic"]) == [[dlq["topic"], "2", "1"]]
    [backlog] = data["backlog"]
    assert table_rows(text, "orders") == [["orders", "customer.orders", "1", "3", "12.5s", "0"]]
    assert backlog["oldest_age_s"] == 12.5
    assert backlog["parked"] == 0  # the "set aside" column


def test_check_json_holds_the_divergences_of_the_table() -> None:
    found = [
        check.Divergence("customer copy differs", "c-1", "name", "accounts"),
        check.Divergence("status change missing in order", "o-9", "SHIPPED (v3)", None),
    ]
    table: list[str] = []
    check._report(found, table.append)
    out: list[str] = []
    check._report(found, out.append, after_repair=True, as_json=True)
    [line] = out
    data = json.loads(line)
    assert data["after_repair"] is True
    for d, row in zip(data["divergences"], found, strict=True):
        assert d == {"kind": row.kind, "subject": row.subject, "detail": row.detail, "owner": row.owner}
        assert f"{d['kind']}  " in table[0] and d["subject"] in table[0]
    none: list[str] = []
    check._report([], none.append, as_json=True)
    assert json.loads(none[0]) == {"after_repair": False, "divergences": []}


def test_dlq_rows_become_json_objects_field_for_field() -> None:
    row = ParkedRow("t:0:5", "CustomerChanged", "c-1", "3", False, "boom", "2026-01-01T00:00:00Z")
    assert json.loads(json_line({"records": [row]})) == {
        "records": [
            {
                "id": "t:0:5",
                "type": "CustomerChanged",
                "key": "c-1",
                "attempts": "3",
                "replayed": False,
                "error": "boom",
                "time": "2026-01-01T00:00:00Z",
            }
        ]
    }


def record(value: bytes, headers: list[tuple[str, bytes]], offset: int = 41) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topology.CUSTOMER_CHANGES, 2, offset, 1_767_225_600_000, 0, b"c-7", value, None, 3,
        len(value), headers,
    )


def test_watch_json_is_the_line_as_data_one_object_per_line() -> None:
    event = events_pb2.CustomerChanged(customer_id="c-7", version=3)
    value, headers = encode(event, source="//accounts", key="c-7")
    rec = record(value, list(headers))
    line = tail.event_line(rec)
    data = tail.event_data(rec)
    assert "\n" not in json_line(data)
    assert json.loads(json_line(data)) == data
    assert line.startswith(f"{data['time']}  {data['topic']}  {data['partition']}@{data['offset']}  ")
    assert f"  {data['type']}  {data['key']}  " in line
    assert data["message"] == {"customerId": "c-7", "version": "3"}
    assert 'customer_id: "c-7"' in line and "version: 3" in line


def test_watch_json_of_an_undecodable_record_says_why() -> None:
    rec = record(b"\xff", [("ce_type", b"nope")])
    data = tail.event_data(rec)
    assert (data["type"], data["message"]) == ("?", None)
    assert data["error"].startswith("undecodable") and data["error"] in tail.event_line(rec)


def test_version_is_the_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        storefront(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == "storefront 0.1.0"


def test_every_command_lists_the_exit_codes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "storefront_cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for code in ("0  done", "1  done", "2  not done", "130 interrupted"):
        assert code in out


def test_make_status_is_storefront_status() -> None:
    dry = subprocess.run(
        ["make", "-n", "status"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "storefront status" in dry
