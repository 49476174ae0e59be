"""The naming conventions every service follows, knowing no service: the CloudEvents source
of a service's events, its consumer group and the dead-letter queue of each topic it
consumes. Which services and topics exist is the topology's (`topology`), not svckit's.

Depends on nothing, so anything can import it.
"""

from __future__ import annotations


def source(service: str) -> str:
    """The CloudEvents `source` of the events a service publishes."""
    return f"//storefront/{service}"


DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str, group: str) -> str:
    """Where consumer group `group` parks what it cannot apply from `topic`: one queue per
    group and topic, so two consumers of a topic never replay or count each other's."""
    return f"{topic}.{group}{DLQ_SUFFIX}"


def legacy_dlq_topic(topic: str) -> str:
    """The one DLQ `topic` had before the queues were per consumer group, shared by whoever
    consumed it: its consumers move their records out of it (svckit.dlq.move_parked)."""
    return f"{topic}{DLQ_SUFFIX}"


def consumer_group(service: str, run: str = "") -> str:
    """A service's consumer group: ``<service>-svc``, or ``<service>-svc.<run>`` for one of
    several runs sharing a broker (tests). The broker's ACLs grant each service the groups
    under its own name only (docs/security.md)."""
    return f"{run_groups_prefix(service)}{run}" if run else f"{service}-svc"


def run_groups_prefix(service: str) -> str:
    """What every per-run group of `service` starts with (and its DLQ-replay group)."""
    return f"{service}-svc."


def dlq_replay_group(group: str) -> str:
    """The group whose committed offsets record how far a service's DLQ replays got: under
    the service's own groups (``orders-svc.dlq-replay``), which its ACLs grant."""
    return f"{group}.dlq-replay"
