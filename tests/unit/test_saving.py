"""svckit.saving: the save step every use case runs (load, decide, guarded write), retried on
a lost race a bounded number of times, with backoff; ABORTED at once for an etag request."""

from __future__ import annotations

from typing import Any

import pytest

from storefront.catalog.v1 import catalog_pb2
from svckit import saving
from svckit.errors import Aborted
from svckit.saving import LOST, Change, Document, Lost, change, until_saved


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(saving.asyncio, "sleep", sleep)
    return waits


async def test_a_lost_race_is_tried_again_with_growing_backoff(no_waiting: list[float]) -> None:
    tries = 0

    async def attempt() -> str | Lost:
        nonlocal tries
        tries += 1
        return LOST if tries < 4 else "done"

    assert await until_saved(attempt, what="x") == "done"
    assert tries == 4 and len(no_waiting) == 3
    assert all(0 < w <= saving.RETRY_CAP_SECONDS for w in no_waiting)
    assert no_waiting[2] > no_waiting[0]  # equal jitter: each step at least half of its cap


def always_lost() -> tuple[list[int], Any]:
    tries: list[int] = []

    async def attempt() -> str | Lost:
        tries.append(1)
        return LOST

    return tries, attempt


async def test_retries_are_bounded_then_aborted(no_waiting: list[float]) -> None:
    tries, attempt = always_lost()
    with pytest.raises(Aborted):
        await until_saved(attempt, what="customer c-1")
    assert len(tries) == saving.MAX_ATTEMPTS and len(no_waiting) == saving.MAX_ATTEMPTS - 1


async def test_a_request_with_an_etag_is_aborted_on_its_first_lost_race() -> None:
    tries, attempt = always_lost()
    with pytest.raises(Aborted):
        await until_saved(attempt, what="x", retry=False)
    assert len(tries) == 1


class Racing:
    """One stored product; the first `losses` writes find another writer's version."""

    def __init__(self, losses: int) -> None:
        self.stored = catalog_pb2.Product(id="p", title="a", version=1)
        self.losses = losses

    async def load(self) -> catalog_pb2.Product:
        return catalog_pb2.Product(id="p", title=self.stored.title, version=self.stored.version)

    async def update(
        self, product: catalog_pb2.Product, expected: int, events: list[Document]
    ) -> bool:
        if self.losses:
            self.losses -= 1
            self.stored = catalog_pb2.Product(
                id="p", title=self.stored.title + "+other", version=self.stored.version + 1
            )
            return False
        assert expected == self.stored.version
        self.stored = product
        return True


def append_b(current: catalog_pb2.Product) -> Change:
    return Change(
        catalog_pb2.Product(id="p", title=current.title + "+b", version=current.version + 1), []
    )


async def test_change_decides_again_on_what_the_winner_stored() -> None:
    store = Racing(losses=2)
    saved = await change(store, store.load, append_b, what="product p")
    assert saved.title == "a+other+other+b" and saved.version == 4
    assert store.stored == saved


async def test_change_without_a_decision_writes_nothing_and_answers_the_loaded_state() -> None:
    store = Racing(losses=5)
    same = await change(store, store.load, lambda current: None, what="product p")
    assert same.version == 1 and store.losses == 5
