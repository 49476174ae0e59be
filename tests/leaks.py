"""Where the test data's personal and card data must never show up: log files, DLQ headers,
topics and databases. Used by the e2e card test, the fault suite and the session's end
(tests/conftest.py), which scan what the services really wrote.

The needles are the test data: the demo people and the other customers the suites create
(names, card numbers in every encoding the tests send: bare digits, groups of four with
spaces or dashes, and their first and last eight digits), and any e-mail address at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import topology
from stack.embedded import EmbeddedStack
from stack.embedded import _run_sync as run_sync
from storefront_cli.demo import PEOPLE
from svckit import names
from svckit.kafka import KafkaConnection
from tests.support import read_raw

CARD_NUMBERS = sorted(
    {p[-1] for p in PEOPLE} | {"4111111111111111", "5555555555554444", "1234678900004242"}
)
NAMES = sorted({n for p in PEOPLE for n in p[1:3]} | {"Ada", "Lovelace"})
EMAIL = re.compile(rb"[A-Za-z0-9._%+{}-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_NAME = re.compile(rb"\b(?:" + b"|".join(n.encode() for n in NAMES) + rb")\b")


def card_encodings(number: str) -> list[bytes]:
    digits = re.sub(r"\D", "", number)
    groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    return [
        digits.encode(),
        " ".join(groups).encode(),
        "-".join(groups).encode(),
        digits[:8].encode(),
        digits[-8:].encode(),
    ]


def _alone(needle: bytes) -> re.Pattern[bytes]:
    """`needle` not inside a longer run of digits: the last eight digits of 340000000000009
    are also the tail of Kafka's segment name 00000000000000000009, which is no leak."""
    return re.compile(rb"(?<![0-9])" + re.escape(needle) + rb"(?![0-9])")


def card_leaks(where: str, blob: bytes, numbers: Iterable[str] = CARD_NUMBERS) -> list[str]:
    return [
        f"{where}: card digits {needle.decode()}"
        for number in numbers
        for needle in card_encodings(number)
        if _alone(needle).search(blob)
    ]


def personal_leaks(where: str, blob: bytes) -> list[str]:
    """Names and e-mail addresses of the test data, and card digits."""
    found = [f"{where}: e-mail {m.group().decode(errors='replace')}" for m in EMAIL.finditer(blob)]
    found += [f"{where}: name {m.group().decode()}" for m in _NAME.finditer(blob)]
    return found + card_leaks(where, blob)


def _any_leak() -> re.Pattern[bytes]:
    """One pattern that matches somewhere in a line exactly when :func:`personal_leaks` finds
    something in it: an e-mail's "@domain" with a local-part character before it, a name
    standing alone, or a card encoding standing alone. No alternative can span a newline.

    Every alternative starts with its literal and checks what precedes it with a lookbehind
    placed after it: a pattern that starts with literals lets the regex engine skip to the
    positions holding one of their first bytes, twelve times faster on a FerretDB log than
    the same alternatives with their guards in front."""
    needles = sorted(
        {n for number in CARD_NUMBERS for n in card_encodings(number)}, key=len, reverse=True
    )
    email = EMAIL.pattern[EMAIL.pattern.index(b"@") :]
    alternatives = [rb"@(?<=[A-Za-z0-9._%+{}-]@)" + email[1:]]
    alternatives += [
        re.escape(n.encode()) + rb"(?<!\w" + re.escape(n.encode()) + rb")\b" for n in NAMES
    ]
    alternatives += [re.escape(n) + rb"(?<![0-9]" + re.escape(n) + rb")(?![0-9])" for n in needles]
    return re.compile(b"|".join(alternatives))


_ANY_LEAK = _any_leak()


def log_files(run_dir: Path) -> list[Path]:
    """Every log of the run dir, the rotated ones (``<name>.log.1`` ...) included."""
    return sorted(p for p in (run_dir / "logs").glob("*") if p.is_file())


def file_leaks(path: Path) -> list[str]:
    """What :func:`personal_leaks` finds in each line of ``path``, in one pass over its bytes:
    the combined pattern finds the lines with a hit (rare), and only those are examined in
    detail and numbered."""
    blob = path.read_bytes()
    found: list[str] = []
    line_no, counted_to, last_start = 1, 0, -1
    for m in _ANY_LEAK.finditer(blob):
        start = blob.rfind(b"\n", 0, m.start()) + 1
        if start == last_start:
            continue  # this line was examined already
        line_no += blob.count(b"\n", counted_to, start)
        counted_to, last_start = start, start
        end = blob.find(b"\n", m.end())
        line = blob[start : len(blob) if end < 0 else end]
        found += personal_leaks(f"{path.name}:{line_no}", line)
    return found


def log_leaks(run_dir: Path) -> list[str]:
    """Every line of every log of the run dir: services, Envoy, Kafka, FerretDB, PostgreSQL."""
    return [leak for path in log_files(run_dir) for leak in file_leaks(path)]


async def topic_leaks(
    kafka: KafkaConnection, topics: Iterable[str] = topology.SYSTEM.all_topics
) -> tuple[list[str], int]:
    """Card digits anywhere in any record (events carry names by design, cards never), and
    personal data in DLQ headers. Also returns how many records were read."""
    found: list[str] = []
    records = 0
    for topic in topics:
        for r in await read_raw(kafka, topic):
            records += 1
            where = f"{topic}:{r.partition}@{r.offset}"
            headers = b"\n".join(k.encode() + b"=" + v for k, v in r.headers or ())
            found += card_leaks(where, (r.key or b"") + (r.value or b""))
            if topic.endswith(names.DLQ_SUFFIX):
                found += personal_leaks(f"{where} headers", headers)
            else:
                found += card_leaks(f"{where} headers", headers)
    return found, records


def stack_leaks(stack: EmbeddedStack) -> list[str]:
    """Every log of a stack's run dir and every record of its topics (call it with the
    services stopped, so their logs are complete)."""
    return log_leaks(stack.run_dir) + run_sync(lambda: topic_leaks(stack.kafka))[0]


def argv_leaks(stack: EmbeddedStack) -> list[str]:
    """Processes of the run dir whose command line (which every local user can read, in
    /proc/<pid>/cmdline) holds one of its passwords or keys."""
    secrets = [
        p.read_text().strip() for p in (stack.run_dir / "secrets").rglob("*") if p.is_file()
    ]
    found = []
    for name in stack.supervisor.names():
        pid = stack.supervisor.pid(name)
        if pid is None:
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            continue
        found += [f"{name}: a secret on its command line" for s in secrets if s and s in argv]
    return found
