""""Replay everything" served by any replica (issue 23 build 3): the DLQ-replay group's progress
only moves forward, so a replica that finishes an older replay after another replica went
further does not send the next replay back over records already replayed."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from stack.embedded import EmbeddedStack, ensure_topics
from svckit.dlq import _commit, replayed_upto
from tests.support import unique

pytestmark = pytest.mark.integration


async def test_replay_progress_never_moves_back(stack: EmbeddedStack) -> None:
    dlq = unique("test.progress") + ".dlq"
    await ensure_topics(stack.kafka, [dlq], partitions=1)
    group = unique("test-dlq-replay")
    tp = TopicPartition(dlq, 0)
    await _commit(stack.kafka, group, {tp: 3})  # replica A replayed up to offset 3
    await _commit(stack.kafka, group, {tp: 1})  # replica B, started earlier, got to 1
    assert await replayed_upto(stack.kafka, group, [tp]) == {tp: 3}
