"""Where replicas and brokers listen, derived in one place, and what a three-node Kafka is
configured with (no processes: the e2e and fault suites start them)."""

from __future__ import annotations

from pathlib import Path

import pytest

import topology
from stack.embedded import EmbeddedStack, Ports, broker_name
from storefront_cli import system
from storefront_cli.health import replica_parts
from storefront_cli.where import Where


def test_replicas_listen_on_the_declared_ports_plus_a_stride_each() -> None:
    ports = system.SystemPorts.declared(topology.SYSTEM, 3)
    accounts = topology.SYSTEM.service(topology.ACCOUNTS)
    assert ports.instances("accounts") == ("accounts", "accounts-2", "accounts-3")
    assert [ports.grpc(p) for p in ports.instances("accounts")] == [
        accounts.grpc_port + k * system.REPLICA_PORT_STRIDE for k in range(3)
    ]
    assert ports.admin("accounts-3") == accounts.admin_port + 2 * system.REPLICA_PORT_STRIDE
    every = [
        port
        for mapping in (ports.grpc_ports, ports.metrics_ports, ports.admin_ports)
        for port in mapping.values()
    ]
    assert len(every) == len(set(every)) == 3 * 3 * len(topology.SYSTEM.names)
    assert ports.envoy not in every and ports.envoy_admin not in every
    assert system.SystemPorts.declared(topology.SYSTEM) == system.SystemPorts()


def test_the_largest_declared_layout_keeps_every_port_apart() -> None:
    ports = system.SystemPorts.declared(topology.SYSTEM, system.MAX_REPLICAS)
    every = [
        p for m in (ports.grpc_ports, ports.metrics_ports, ports.admin_ports) for p in m.values()
    ]
    assert len(every) == len(set(every))
    assert not {ports.envoy, ports.envoy_admin, 9090, 9092, 9093} & set(every)
    with pytest.raises(ValueError):
        system.SystemPorts.declared(topology.SYSTEM, system.MAX_REPLICAS + 1)
    with pytest.raises(ValueError):
        system.SystemPorts.declared(topology.SYSTEM, 0)


def test_free_ports_for_replicas_are_distinct_and_recorded_in_the_run_dir(tmp_path: Path) -> None:
    ports = system.SystemPorts.free(3)
    assert len(ports.processes()) == 3 * len(topology.SYSTEM.names)
    system.save_ports(tmp_path, ports)
    assert system.saved_ports(tmp_path) == ports
    assert system.saved_ports(tmp_path / "nothing") is None


def test_a_target_of_replicas_names_every_one_for_round_robin() -> None:
    ports = system.SystemPorts.declared(topology.SYSTEM, 3)
    assert system.grpc_target(ports, "orders") == (
        "ipv4:127.0.0.1:50052,127.0.0.1:50152,127.0.0.1:50252"
    )
    assert system.grpc_target(system.SystemPorts(), "orders") == "127.0.0.1:50052"
    assert system.service_of("orders-3") == "orders" and system.service_of("orders") == "orders"


def test_status_has_a_row_per_replica(tmp_path: Path) -> None:
    from storefront_cli import endpoints

    ep = endpoints.load(tmp_path)
    one = replica_parts(Where(ep, system.SystemPorts()))
    assert [part for part, _ in one] == [f"{s}_svc" for s in topology.SYSTEM.names]
    three = replica_parts(Where(ep, system.SystemPorts.declared(topology.SYSTEM, 3)))
    assert ("accounts_svc#2", "accounts-2") in three and len(three) == 3 * len(one)


def test_a_three_node_kafka_is_a_quorum_of_three_with_replication_3_and_min_isr_2(
    tmp_path: Path,
) -> None:
    ports = Ports.free(3)
    assert ports.brokers == 3 and len({p for pair in ports.kafka_nodes for p in pair}) == 6
    st = EmbeddedStack(tmp_path, ports, log=lambda _: None)
    st.kafka_credentials.create()
    assert st.brokers == ("kafka", "kafka-2", "kafka-3") == tuple(broker_name(k) for k in range(3))
    assert st.kafka_bootstrap.count(",") == 2
    for k in range(3):
        props = dict(line.split("=", 1) for line in st._kafka_properties(k).splitlines() if line)
        assert props["node.id"] == str(k + 1)
        voters = props["controller.quorum.voters"].split(",")
        assert [v.split("@")[0] for v in voters] == ["1", "2", "3"]
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["unclean.leader.election.enable"] == "false"
        assert props["allow.everyone.if.no.acl.found"] == "false"  # same ACLs on every node
    one = tmp_path / "one"
    one.mkdir()
    alone = EmbeddedStack(one, Ports.free(), log=lambda _: None)
    alone.kafka_credentials.create()
    single = dict(line.split("=", 1) for line in alone._kafka_properties(0).splitlines() if line)
    assert single["min.insync.replicas"] == "1" and "controller.quorum.voters" not in single
    with pytest.raises(ValueError):
        Ports.free(2)


def test_the_active_controller_is_read_from_the_nodes_quorum_state(tmp_path: Path) -> None:
    st = EmbeddedStack(tmp_path, Ports.free(3), log=lambda _: None)
    assert st.active_controller() is None
    for k, (epoch, leader) in enumerate([(3, 2), (4, 3), (2, 1)]):
        state = st.kafka_data_of(k) / "__cluster_metadata-0" / "quorum-state"
        state.parent.mkdir(parents=True)
        state.write_text(f'{{"leaderId": {leader}, "leaderEpoch": {epoch}}}')
    assert st.active_controller() == "kafka-3"  # the newest epoch's word
