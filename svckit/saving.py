"""The save step of every use case, written once: load, one domain decision, a write guarded
by the version that was loaded, and, when another writer got there first, the whole step again.

The database makes each single-document write atomic (MongoDB; the embedded FerretDB with the
patch of stack/ferretdb/patches), so the version guard alone decides who wins a race, across
tasks and processes alike: nothing is locked around the step. A loser is re-read and
re-decided on the new state (a rule may now refuse it, e.g. cancelling what was just shipped),
a bounded number of times with jittered backoff (svckit.backoff) so racers fall out of step.
A request that carries an etag asked for a concurrency check (AIP-154): it is answered ABORTED
on its first lost race instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, NamedTuple, Protocol, TypeVar

from svckit.backoff import Backoff
from svckit.errors import Aborted

Document = dict[str, Any]
T = TypeVar("T")

MAX_ATTEMPTS = 25
"""Tries of one use case before it answers ABORTED. Each lost race means another writer's
write landed; 8 clients updating one customer 10 times each at once (80 updates, each a
read, two card seals and a write) all land within it (tests/integration/test_accounts_svc.py),
and the caller's deadline ends it sooner anyway."""
RETRY_BASE_SECONDS = 0.005
RETRY_CAP_SECONDS = 0.25
"""Backoff between tries: from about one write's time up to a quarter second, drawn at
random (svckit.backoff), so writers that lost together do not come back together."""


class Lost:
    """What an attempt returns when its version-guarded write matched nothing."""

    def __repr__(self) -> str:
        return "LOST"


LOST: Final = Lost()


def saved(landed: bool, result: T) -> T | Lost:
    """`result` if the guarded write landed, else LOST."""
    return result if landed else LOST


async def until_saved(
    attempt: Callable[[], Awaitable[T | Lost]], *, what: str, retry: bool = True
) -> T:
    """Run `attempt` (load, decide, guarded write) until it returns something other than LOST.

    ``retry=False`` (a request with an etag): ABORTED on the first lost race. Otherwise up to
    MAX_ATTEMPTS tries, backing off between them, then ABORTED."""
    backoff = Backoff(RETRY_BASE_SECONDS, RETRY_CAP_SECONDS)
    for tries in range(1, MAX_ATTEMPTS + 1):
        result = await attempt()
        if not isinstance(result, Lost):
            return result
        if not retry or tries == MAX_ATTEMPTS:
            break
        await asyncio.sleep(backoff.next_delay())
    raise Aborted(f"{what} changed concurrently; re-read and retry")


class Versioned(Protocol):
    version: int


V = TypeVar("V", bound=Versioned)
A = TypeVar("A", contravariant=True)


class Change(NamedTuple):
    """A domain decision to write: the aggregate's new state and the events it queues."""

    aggregate: Any
    events: list[Document]


class Updates(Protocol[A]):
    async def update(self, aggregate: A, expected_version: int, events: list[Document]) -> bool:
        """The version-guarded write (svckit.store.Store.update)."""


async def change(
    store: Updates[V],
    load: Callable[[], Awaitable[V]],
    decide: Callable[[V], Change | None],
    *,
    what: str,
    retry: bool = True,
) -> V:
    """The common use case: `load` the aggregate (raising NotFound & co. itself), `decide` its
    new state and events (None: nothing changes, the loaded state is the answer), write them
    guarded by the loaded version; retried as `until_saved` says. Returns the state stored."""

    async def attempt() -> V | Lost:
        current = await load()
        decided = decide(current)
        if decided is None:
            return current
        landed = await store.update(decided.aggregate, current.version, decided.events)
        return saved(landed, decided.aggregate)

    return await until_saved(attempt, what=what, retry=retry)
