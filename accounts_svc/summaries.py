"""What accounts answers for (`storefront check`): its customers, as their copies see them."""

from __future__ import annotations

from typing import Any

import topology
from accounts_svc.repository import CustomerRepository
from svckit.admin import Summarized
from svckit.checks import Summary, document_summary

PUBLISHED = ("name", "contact", "addresses")
"""The content CustomerChanged carries to the copies (the cards never leave accounts)."""


def summarize(doc: dict[str, Any]) -> Summary:
    return document_summary(doc, PUBLISHED, {"deleted": bool(doc.get("deleted"))})


def summaries(customers: CustomerRepository) -> dict[str, Summarized]:
    return {topology.CUSTOMERS: Summarized(customers.collection, summarize)}
