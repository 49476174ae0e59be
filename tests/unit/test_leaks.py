"""The leak scanner of the e2e and fault suites finds what it looks for, and only that."""

from __future__ import annotations

from pathlib import Path

from tests import leaks


def test_log_scan_finds_names_emails_and_card_digits_in_any_encoding(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    clean = (
        '{"level": "INFO", "message": "denied GetOrder to cust-b (customer)", '
        '"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "rpc": "storefront.accounts.v1"}\n'
        '{"message": "dependency unavailable: OperationFailure code=1", "metadata": "x"}\n'
    )
    (logs / "accounts.log").write_text(clean)
    assert leaks.log_leaks(tmp_path) == []
    (logs / "orders.log").write_text(
        clean
        + "full error: {'first_name': 'Rajesh'}\n"
        + "email chaos-c1-77.v2@example.com\n"
        + "card 4111 1111 1111 1111\n"
        + "card 5500-0055-5555-5559\n"
    )
    found = leaks.log_leaks(tmp_path)
    assert {f.split(": ", 1)[0] for f in found} == {f"orders.log:{n}" for n in (3, 4, 5, 6)}
    assert any("name Rajesh" in f for f in found)
    assert any("e-mail chaos-c1-77.v2@example.com" in f for f in found)
    assert any("orders.log:6" in f for f in found)


def test_digits_inside_a_longer_number_are_no_card() -> None:
    """Seen in the fault suite: Kafka's segment 00000000000000000009 ends in the last eight
    digits of the test Amex 340000000000009; a card number stands alone."""
    segment = b"file=/data/kafka/orders.order.fulfill-0/00000000000000000009.snapshot"
    assert leaks.card_leaks("kafka.log", segment) == []
    assert leaks.card_leaks("log", b"number=340000000000009,") != []
    assert leaks.card_leaks("log", b"last eight 00000009 alone") != []


def test_one_pass_scan_finds_what_the_line_by_line_scan_finds(tmp_path: Path) -> None:
    """The fast scan (one combined pattern over the file's bytes) reports exactly what
    applying personal_leaks to each line reports, for every kind of planted leak."""
    planted = [
        b"Rajesh at the very start",
        b"",
        b'{"message": "ok", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}',
        *(f"name {n} here and {n}son not".encode() for n in leaks.NAMES),
        *(b"card " + e + b" end" for c in leaks.CARD_NUMBERS for e in leaks.card_encodings(c)),
        b"segment 00000000000000000009.snapshot and 340000000000009 alone",
        b"two: ada.lovelace+x@mail.example.org, b@c.io and Maria Lopez",
        b"not an e-mail: @example.com nor user@localhost",
        b"crlf line Kenji\r",
        b"1111111111111111 next to 4111111111111111x",
        b"tail without newline Sato",
    ]
    blob = b"\n".join(planted)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "x.log").write_bytes(blob * 3)
    (logs / "x.log.1").write_bytes(b"rotated: Lovelace\n")
    expected = [
        leak
        for path in leaks.log_files(tmp_path)
        for n, line in enumerate(path.read_bytes().split(b"\n"), 1)
        for leak in leaks.personal_leaks(f"{path.name}:{n}", line)
    ]
    assert leaks.log_leaks(tmp_path) == expected
    assert len(expected) > 3 * (len(leaks.NAMES) + 5 * len(leaks.CARD_NUMBERS))
    assert any(f.startswith("x.log.1:1: name Lovelace") for f in expected)
