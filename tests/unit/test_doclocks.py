"""Per-document locks: exclusive across tasks, re-entrant within one."""

from __future__ import annotations

import asyncio

from svckit.doclocks import DocumentLocks


async def test_a_task_can_take_its_own_lock_again_and_others_wait() -> None:
    locks = DocumentLocks()
    order: list[str] = []

    async def outer() -> None:
        async with locks.hold("d"):
            order.append("outer in")
            async with locks.hold("d", "e"):  # again, plus another: no deadlock
                await asyncio.sleep(0.01)
                order.append("inner")
            order.append("outer out")

    async def other() -> None:
        await asyncio.sleep(0)
        async with locks.hold("d"):
            order.append("other")

    await asyncio.gather(outer(), other())
    assert order == ["outer in", "inner", "outer out", "other"]
    assert not locks._locks and not locks._owners  # nothing left behind
