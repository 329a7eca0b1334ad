"""SQLite's writers taking turns: requests in the order they came, the dispatcher before them.

The API's requests, the inbound mail and the dispatcher share one write gate on SQLite (see
``db.write_gate``). Queued in arrival order alone, every claim and every record of sent messages
waited behind all the requests queued before it: in a burst of events, the first notices of the
first incidents waited for most of the burst. The dispatcher's turns go first instead: it waits
for the transaction in progress, and it cannot keep the requests out, because between two of its
turns it renders and sends.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import AbstractAsyncContextManager, suppress
from types import TracebackType


class WriteGate:
    """An asyncio lock with two queues: its own (``async with gate``) and ``first``'s, whose
    waiters have the next turn."""

    def __init__(self) -> None:
        self._held = False
        self._queues: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())
        self.first: AbstractAsyncContextManager[object] = _Turn(self, 0)

    async def __aenter__(self) -> None:
        await self._acquire(1)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    async def _acquire(self, queue: int) -> None:
        if not self._held:
            self._held = True
            return
        waiter = asyncio.get_running_loop().create_future()
        self._queues[queue].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the turn came with the cancellation: the next one's
            else:
                with suppress(ValueError):
                    self._queues[queue].remove(waiter)
            raise

    def _release(self) -> None:
        """Hand the turn to the longest waiter of the first queue, else of the other."""
        for queue in self._queues:
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._held = False


class _Turn:
    def __init__(self, gate: WriteGate, queue: int) -> None:
        self._gate = gate
        self._queue = queue

    async def __aenter__(self) -> None:
        await self._gate._acquire(self._queue)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._gate._release()


def ahead(gate: AbstractAsyncContextManager[object]) -> AbstractAsyncContextManager[object]:
    """The side of ``gate`` that goes before the queue, where it has one (SQLite's)."""
    return gate.first if isinstance(gate, WriteGate) else gate
