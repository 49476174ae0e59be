"""Request shape, checked once, at each service's entrypoint (its grpc_api) before any use case
runs: what must be present, how long it may be, what format an id has. Everything a request
breaks is answered at once, as one INVALID_ARGUMENT with a field violation each.

Rules about the state (what a customer, an order or a transition may be) are the domains';
handlers check neither (docs/security.md, "Where input is validated").
"""

from __future__ import annotations

from dataclasses import dataclass

from svckit import paging, statuses
from svckit.errors import Violations
from svckit.ids import check_client_id


class RequestShape:
    def __init__(self) -> None:
        self._violations = Violations()

    def required(self, value: str, field: str) -> RequestShape:
        if not value:
            self._violations.add(field, "is required")
        return self

    def client_id(self, value: str, field: str) -> RequestShape:
        """An id the client may choose (empty: the service chooses)."""
        check_client_id(value, field, self._violations)
        return self

    def note(self, value: str, field: str) -> RequestShape:
        """A status change's note or reason."""
        statuses.check_note(value, field, self._violations)
        return self

    def check(self) -> None:
        """INVALID_ARGUMENT with every violation found, if any."""
        self._violations.raise_if_any()


def request() -> RequestShape:
    return RequestShape()


@dataclass(frozen=True)
class Page:
    """A List request's page, decoded: the id to continue after (None: the first page) and how
    many items at most."""

    after: str | None
    limit: int


def page(size: int, token: str) -> Page:
    """`page_size` and `page_token` checked (not negative; a token this service issued)."""
    return Page(paging.decode_token(token), paging.page_size(size))


def next_page_token(last: str | None) -> str:
    """The token of the page after the one that ended at `last` ("": no more)."""
    return paging.encode_token(last) if last else ""


def status_filter(status: int) -> int | None:
    """A list's status filter: None for any; an unknown number is refused."""
    return statuses.status_filter(status)
