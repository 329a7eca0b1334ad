"""SQLite's writers take turns: requests in arrival order, the dispatcher's turns before them."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager

import pytest

from oos_notify.store.turns import WriteGate, ahead


async def turns_taken(gate: WriteGate, arrivals: list[tuple[str, bool]]) -> list[str]:
    """The order in which writers arriving in ``arrivals`` order (name, whether it is the
    dispatcher's) get their turn, while a request holds the gate as they arrive."""
    order: list[str] = []
    release = asyncio.Event()

    async def write(name: str, side: AbstractAsyncContextManager[object]) -> None:
        async with side:
            order.append(name)
            if name == "holder":
                await release.wait()

    holder = asyncio.create_task(write("holder", gate))
    await asyncio.sleep(0)
    writers = [asyncio.create_task(write(n, ahead(gate) if d else gate)) for n, d in arrivals]
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, *writers), timeout=10)
    return order


async def test_the_dispatcher_goes_before_the_requests_waiting() -> None:
    order = await turns_taken(
        WriteGate(),
        [("event 1", False), ("event 2", False), ("claim", True), ("event 3", False)],
    )
    assert order == ["holder", "claim", "event 1", "event 2", "event 3"]


async def test_requests_keep_their_order_and_get_the_gate_back_between_claims() -> None:
    gate = WriteGate()
    order = await turns_taken(
        gate, [("event 1", False), ("claim", True), ("event 2", False), ("settle", True)]
    )
    assert order == ["holder", "claim", "settle", "event 1", "event 2"]
    # And the gate is free once all are done
    async with gate:
        pass


async def test_a_writer_cancelled_while_waiting_passes_its_turn_on() -> None:
    gate = WriteGate()
    reached: list[str] = []
    async with gate:
        cancelled = asyncio.create_task(gate.first.__aenter__())
        waiting = asyncio.create_task(gate.__aenter__())
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    await asyncio.wait_for(waiting, timeout=10)
    reached.append("request")
    await gate.__aexit__(None, None, None)
    async with gate.first:
        reached.append("claim")
    assert reached == ["request", "claim"]


async def test_a_writer_cancelled_as_its_turn_came_hands_it_to_the_next() -> None:
    gate = WriteGate()
    await gate.__aenter__()
    handed = asyncio.create_task(gate.first.__aenter__())
    after = asyncio.create_task(gate.__aenter__())
    await asyncio.sleep(0)
    await gate.__aexit__(None, None, None)  # the turn goes to ``handed``, not yet running
    handed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed
    await asyncio.wait_for(after, timeout=10)
    await gate.__aexit__(None, None, None)
