"""`storefront check`'s parts without a stack: the sorted merge (svckit.checks), the rules the
consuming services declare (`<package>/checks.py`), and how the CLI finds them."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator, Iterable

import pytest

import topology
from fulfillment_svc.checks import approved_orders
from orders_svc import checks as orders_checks
from storefront_cli import check
from svckit.checks import Divergence, Summary, digest_of, merge


async def stream(summaries: Iterable[Summary]) -> AsyncIterator[Summary]:
    for s in summaries:
        yield s


async def run(source: Iterable[Summary], copy: Iterable[Summary], rule: check.Comparison) -> list:
    return [d async for d in merge(stream(source), stream(copy), rule.rule)]


def rule_of(source: str, copy: str) -> check.Comparison:
    [found] = [
        c
        for c in check.comparisons()
        if (c.source.collection, c.copy.collection)
        == (
            source,
            copy,
        )
    ]
    return found


CUSTOMERS = rule_of(topology.CUSTOMERS, topology.CUSTOMER_COPIES)
PRODUCTS = rule_of(topology.PRODUCTS, topology.PRODUCT_COPIES)


def test_every_copy_of_the_system_is_compared_by_its_consumer() -> None:
    pairs = {(c.source, c.copy) for c in check.comparisons()}
    assert {(s.service, s.collection) for s, _ in pairs} >= {
        (topology.ACCOUNTS, topology.CUSTOMERS),
        (topology.CATALOG, topology.PRODUCTS),
        (topology.ORDERS, topology.ORDER_DOCUMENTS),
        (topology.FULFILLMENT, topology.FULFILLMENTS),
    }
    for source, copy in pairs:  # both sides are collections their services declare
        assert source.collection in topology.SYSTEM.service(source.service).collections
        assert copy.collection in topology.SYSTEM.service(copy.service).collections


def test_a_service_without_checks_adds_none() -> None:
    counter = topology.Service(
        "counter", grpc_port=1, metrics_port=2, admin_port=3, package="tests.counter"
    )
    alone = topology.System((counter,))
    assert check.comparisons(alone) == ()


async def test_merge_pairs_ids_of_both_sorted_streams() -> None:
    same = digest_of({"name": "Ada"})
    source = [
        Summary("a", 2, same),
        Summary("b", 3, same),
        Summary("c", 1, same, {"deleted": True}),
        Summary("e", 4, same),
    ]
    copy = [
        Summary("a", 2, same),
        Summary("b", 2, same),
        Summary("c", 1, b"", {"deleted": False}),
        Summary("d", 1, same),
        Summary("e", 4, digest_of({"name": "Mallory"})),
    ]
    found = {(d.kind, d.subject) for d in await run(source, copy, CUSTOMERS)}
    assert found == {
        ("stale customer copy", "b"),
        ("deleted customer still copied", "c"),
        ("copy of unknown customer", "d"),
        ("customer copy differs", "e"),
    }


async def test_missing_copies_are_repaired_by_their_owner() -> None:
    found = await run([Summary("p-1", 3, b"x")], [], PRODUCTS)
    assert [(d.kind, d.owner) for d in found] == [("missing product copy", topology.CATALOG)]
    unknown = await run([], [Summary("p-2", 1, b"x")], PRODUCTS)
    assert [(d.kind, d.owner) for d in unknown] == [("copy of unknown product", None)]


def order(approved: bool, status: str, applied: list[int] = []) -> Summary:  # noqa: B006
    return Summary("o", 5, facts={"approved": approved, "status": status, "applied": applied})


def fulfillment(status: str, published: list[list[object]], cancellable: bool = False) -> Summary:
    facts = {"status": status, "published": published, "cancellable": cancellable}
    return Summary("o", 3, facts=facts)


@pytest.mark.parametrize(
    ("o", "f", "kinds"),
    [
        (order(True, "APPROVED"), None, ["approved order without fulfillment"]),
        (order(True, "CANCELLED"), None, ["cancelled order unknown to fulfillment"]),
        (order(False, "CREATED"), fulfillment("APPROVED", []), ["fulfillment of unapproved order"]),
        (None, fulfillment("APPROVED", []), ["fulfillment of unknown order"]),
        (
            order(True, "CANCELLED"),
            fulfillment("PROCESSING", [], cancellable=True),
            ["cancellation not applied"],
        ),
        (order(True, "SHIPPED"), fulfillment("SHIPPED", []), []),
        (order(False, "CREATED"), None, []),
    ],
)
def test_fulfillment_follows_approved_orders(
    o: Summary | None, f: Summary | None, kinds: list[str]
) -> None:
    assert [d.kind for d in approved_orders("o", o, f)] == kinds


def test_orders_applies_every_published_status_change() -> None:
    f = fulfillment("RECEIVED", [[2, "PROCESSING"], [3, "SHIPPED"], [4, "RECEIVED"]])
    found = list(orders_checks.statuses("o", f, order(True, "RECEIVED", [2, 4])))
    assert [(d.kind, d.detail, d.owner) for d in found] == [
        ("status change missing in order", "SHIPPED (v3)", topology.FULFILLMENT)
    ]
    assert list(orders_checks.statuses("o", f, None)) == []  # fulfillment's rule says it


def test_digests_ignore_key_order() -> None:
    assert digest_of({"a": 1, "b": {"x": 1, "y": 2}}) == digest_of({"b": {"y": 2, "x": 1}, "a": 1})
    assert digest_of({"a": 1}) != digest_of({"a": 2})


async def test_merge_memory_stays_flat_at_100k_documents() -> None:
    """100,000 documents a side hold a summary at a time: the peak stays far below what
    holding one side's summaries (tens of MB) would take."""
    n = 100_000
    digest = digest_of({"v": 1})

    def side(skip: int) -> Iterable[Summary]:
        return (Summary(f"c-{i:06d}", 1, digest) for i in range(n) if i % 1000 != skip)

    tracemalloc.start()
    try:
        found: list[Divergence] = await run(side(1), side(2), CUSTOMERS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(found) == 2 * n // 1000
    print(f"merge of 2 x {n} summaries: peak {peak / 1e6:.2f} MB")
    assert peak < 5_000_000
