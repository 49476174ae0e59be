"""The embedded stack and its supervisor: topics exist, stop stops, Kafka survives kill -9."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError

import topology
from stack import tools
from stack.embedded import KAFKA, TOPIC_PARTITIONS, EmbeddedStack, Ports, ensure_topics
from stack.procs import ProcessError, ProcRecord, Supervisor, port_open
from tests.support import ensure_tools

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    """True if no live process has this pid (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
                pids.append(int(entry.name))
    return pids


def test_kcat_lists_all_topics(stack: EmbeddedStack) -> None:
    """The by-hand kcat of the docs (``python -m stack kcat``) lists every topic as the
    operator, over the SASL/SCRAM of the embedded Kafka 4."""
    ensure_tools("kcat")
    linked = tools.librdkafka_version(tools.path("kcat"))
    # Debian's own librdkafka (2.0.2 on bookworm) repeats the SCRAM client nonce, which Kafka 4
    # refuses (librdkafka#4895): the install must have put kcat on the wheel's.
    assert linked >= tools.LIBRDKAFKA_MIN, f"install bug: kcat runs on librdkafka {linked}"
    kcat = [sys.executable, "-m", "stack", "kcat", "--run-dir", str(stack.run_dir)]
    result = subprocess.run(
        [*kcat, "--", "-L", "-m", "15"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    partitions = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r'topic "([^"]+)" with (\d+) partitions', out)
    }
    for topic in topology.SYSTEM.all_topics:
        assert topic in partitions, f"{topic} missing from kcat -L:\n{out}"
        if not stack.external_kafka:
            assert partitions[topic] == TOPIC_PARTITIONS
    dlqs = [t for t in topology.SYSTEM.all_topics if t.endswith(".dlq")]
    assert len(dlqs) == sum(len(s.consumes) for s in topology.SYSTEM)  # one per group and topic


def test_supervisor_stop_leaves_no_process(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    # A leader that forks a child, like `uv run` or a shell wrapper would.
    code = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    rec = sup.start("wrapper", [sys.executable, "-c", code])
    assert rec.pid is not None
    deadline = time.monotonic() + 10
    while len(_session_pids(rec.pid)) < 2:
        assert time.monotonic() < deadline, "child never appeared"
        time.sleep(0.05)
    members = _session_pids(rec.pid)

    # A process that ignores SIGTERM must be SIGKILLed after the grace period.
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    rec2 = sup.start("stubborn", [sys.executable, "-c", stubborn])
    assert rec2.pid is not None
    time.sleep(0.3)  # let it install the handler

    assert sorted(sup.stop_all(timeout=1.0)) == ["stubborn", "wrapper"]
    for pid in [*members, rec2.pid]:
        assert _gone(pid), f"pid {pid} survived stop"
    assert not sup.is_running("wrapper") and not sup.is_running("stubborn")
    assert not (tmp_path / "pids" / "wrapper.pid").exists()
    assert [s.state for s in sup.status()] == ["stopped", "stopped"]


def test_supervisor_stops_what_was_started_last_first_even_after_a_restart(
    tmp_path: Path,
) -> None:
    # A database, then a service on it; the database is restarted (after a crash, say). The
    # service must still stop first, or its stop waits on a database already gone.
    sup = Supervisor(tmp_path)
    idle = [sys.executable, "-c", "import time; time.sleep(300)"]
    sup.start("database", idle)
    sup.start("service", idle)
    sup.restart("database")
    try:
        assert sup.names() == ["service", "database"]
    finally:
        assert sup.stop_all(timeout=1.0) == ["service", "database"]


def test_supervisor_never_signals_a_foreign_process(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    # Forge a record whose pid is this pytest process but whose argv is something else, as
    # after pid reuse: the supervisor must refuse to touch it.
    stat = Path(f"/proc/{os.getpid()}/stat").read_text()
    forged = ProcRecord(
        name="forged",
        argv=["/usr/bin/some-server", "--flag"],
        cwd=str(tmp_path),
        pid=os.getpid(),
        starttime=int(stat.rsplit(")", 1)[1].split()[19]),
        started_at=time.time(),
    )
    sup._save(forged)
    assert not sup.is_running("forged")
    assert sup.kill("forged") is False
    assert sup.stop("forged", timeout=0.5) is False
    assert [s.state for s in sup.status()] == ["stopped"]


def test_supervisor_readiness_failure_shows_log(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    argv = [sys.executable, "-c", "print('config error: boom', flush=True); raise SystemExit(3)"]
    with pytest.raises(ProcessError, match="boom"):
        sup.start("broken", argv, ready=lambda: False, timeout=10)
    with pytest.raises(ProcessError, match="not ready"):
        sup.start(
            "slow",
            [sys.executable, "-c", "import time; time.sleep(60)"],
            ready=lambda: False,
            timeout=0.5,
        )
    assert not sup.is_running("slow")


async def test_kafka_restarts_after_sigkill_with_same_port_and_data(stack: EmbeddedStack) -> None:
    if stack.external_kafka:
        pytest.skip("Kafka is external: not ours to kill")
    sup = stack.supervisor
    topic = topology.SYSTEM.dead_letters[0].name
    key = uuid.uuid4().hex.encode()

    producer = stack.kafka.producer(acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"survives kill -9", key=key)
    finally:
        await producer.stop()

    old_pid = sup.pid(KAFKA)
    assert old_pid is not None
    assert sup.kill(KAFKA)
    assert _gone(old_pid)
    assert not sup.is_running(KAFKA)
    assert not port_open(stack.ports.kafka)

    t0 = time.monotonic()
    sup.restart(KAFKA, timeout=120)
    print(f"kafka restart after SIGKILL took {time.monotonic() - t0:.1f}s")
    assert sup.pid(KAFKA) not in (None, old_pid)
    assert port_open(stack.ports.kafka)

    assert await ensure_topics(stack.kafka, max_wait=60) == []  # nothing recreated
    consumer = stack.kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        batch = await consumer.getmany(tp, timeout_ms=20_000, max_records=1)
        records = batch.get(tp, [])
        assert records and records[0].key == key and records[0].value == b"survives kill -9"
    finally:
        await consumer.stop()

    # Users and ACLs live in the KRaft metadata log: a service still logs in, and is still
    # held to its own topics.
    accounts = stack.kafka_as("accounts").producer(acks="all")
    await accounts.start()
    try:
        await accounts.send_and_wait("accounts.customer.change", b"after restart", key=key)
        with pytest.raises(TopicAuthorizationFailedError):
            await accounts.send_and_wait(topic, b"not allowed", key=key)
    finally:
        await accounts.stop()


def test_kafka_storage_without_users_is_refused(tmp_path: Path) -> None:
    """A run dir whose broker was formatted before users and ACLs existed (or whose passwords
    are gone) is not started half-secured: the message names what to remove."""
    st = EmbeddedStack(tmp_path, Ports.free(), log=lambda _: None)
    if st.external_kafka:
        pytest.skip("Kafka is external")
    st.kafka_data.mkdir(parents=True)
    (st.kafka_data / "meta.properties").write_text("node.id=1\n")
    with pytest.raises(ProcessError, match=str(st.kafka_data)):
        st.start()
    assert not st.supervisor.is_running(KAFKA)
