"""Divergence between a system of record and a copy of it, found by merging two streams.

Each service answers for its own data (the admin service's ListSummaries: one `Summary` per
document, in id order); a consuming service declares, in its own folder (`<package>.checks`,
`COMPARISONS`), which copy it keeps of which source and the rule that compares one id's two
summaries. `merge` walks both sorted streams side by side, so checking 100,000 documents
holds two summaries at a time, not two collections. This module knows no service.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message


@dataclass(frozen=True)
class Summary:
    """One document as its owner describes it: what a rule may compare."""

    id: str
    version: int = 0
    digest: bytes = b""
    """Of the content a copy keeps (`digest_of`): equal digests, equal content."""
    facts: Mapping[str, Any] = field(default_factory=dict)
    """JSON values a rule reads beside the version (a status, applied versions)."""


def digest_of(content: Mapping[str, Any]) -> bytes:
    """A digest of `content` that does not depend on key order (nested ones included):
    an owner and a copy describing the same fields of the same data get the same bytes."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


@dataclass
class Divergence:
    kind: str
    subject: str
    detail: str
    owner: str | None = None
    """The service that republishes `subject` to repair it; None: not repairable."""


Rule = Callable[[str, Summary | None, Summary | None], Iterable[Divergence]]
"""(id, the source's summary, the copy's summary; None where absent) -> what differs."""


@dataclass(frozen=True)
class Side:
    """A collection of one service, as the topology declares both."""

    service: str
    collection: str


@dataclass(frozen=True)
class Comparison:
    """A copy a service keeps of another's data, and how to tell it has drifted."""

    source: Side
    copy: Side
    rule: Rule


async def merge(
    source: AsyncIterator[Summary], copy: AsyncIterator[Summary], rule: Rule
) -> AsyncIterator[Divergence]:
    """The rule applied to every id of either stream, both sorted by id (a sorted merge):
    memory stays that of one summary per side, whatever the collections' sizes."""
    s = await anext(source, None)
    c = await anext(copy, None)
    pair: tuple[str, Summary | None, Summary | None]
    while s is not None or c is not None:
        if c is None or (s is not None and s.id < c.id):
            assert s is not None
            pair, s = (s.id, s, None), await anext(source, None)
        elif s is None or c.id < s.id:
            pair, c = (c.id, None, c), await anext(copy, None)
        else:
            pair = (s.id, s, c)
            s, c = await anext(source, None), await anext(copy, None)
        for found in rule(*pair):
            yield found


def message_digest(message: Message, fields: Iterable[str]) -> bytes:
    """`digest_of` these fields of a protobuf message, as proto JSON with enums as numbers: an
    owner's aggregate and a copy of another message type holding the same fields agree."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, use_integers_for_enums=True
    )
    return digest_of({f: data.get(f) for f in fields})


def document_summary(
    doc: Mapping[str, Any], content: Iterable[str], facts: Mapping[str, Any] | None = None
) -> Summary:
    """A stored document's summary: its id and version, the digest of its `content` fields."""
    return Summary(
        str(doc["_id"]),
        int(doc.get("version", 0)),
        digest_of({k: doc.get(k) for k in content}),
        facts or {},
    )


def versioned_copy(noun: str, owner: str) -> Rule:
    """The rule of a copy kept by version from its owner's events: missing, older, or
    different at the same version is repaired by the owner republishing; a copy of
    something the owner does not have is not (nothing to republish). A summary's "deleted"
    fact marks a tombstone: the owner's must be copied as one, a copy's counts as absent
    when the owner has nothing."""

    def rule(key: str, source: Summary | None, copy: Summary | None) -> Iterator[Divergence]:
        copied = copy is not None and not copy.facts.get("deleted")
        if source is None:
            if copied:
                yield Divergence(f"copy of unknown {noun}", key, f"{owner} has no such {noun}")
            return
        version = source.version
        if source.facts.get("deleted"):
            if copied:
                yield Divergence(f"deleted {noun} still copied", key, f"v{version}", owner)
        elif copy is None:
            yield Divergence(f"missing {noun} copy", key, f"{owner} v{version}", owner)
        elif copy.facts.get("deleted"):
            yield Divergence(f"copy deleted, {noun} live", key, f"v{version}", owner)
        elif copy.version < version:
            detail = f"copy v{copy.version} < v{version}"
            yield Divergence(f"stale {noun} copy", key, detail, owner)
        elif copy.digest != source.digest:
            yield Divergence(f"{noun} copy differs", key, f"both v{version}", owner)

    return rule
