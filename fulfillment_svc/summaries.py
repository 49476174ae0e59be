"""What fulfillment answers for (`storefront check`): its fulfillments, with the status
changes each has published (which orders must have applied)."""

from __future__ import annotations

from typing import Any

import topology
from fulfillment_svc import domain
from fulfillment_svc.repository import FulfillmentRepository
from svckit.admin import Summarized
from svckit.checks import Summary
from svckit.statuses import status_name


def summaries(fulfillments: FulfillmentRepository) -> dict[str, Summarized]:
    def summarize(doc: dict[str, Any]) -> Summary:
        f = fulfillments.load(doc)
        facts = {
            "status": status_name(f.status, short=True),
            "cancellable": f.status in domain.CANCELLABLE,
            "published": [
                [c.version, status_name(c.status, short=True)] for c in domain.published_changes(f)
            ],
        }
        return Summary(f.order_id, f.version, facts=facts)

    return {topology.FULFILLMENTS: Summarized(fulfillments.collection, summarize)}
