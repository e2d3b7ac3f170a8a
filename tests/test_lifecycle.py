"""stop_on_signals(): a signal ends the block cleanly; nothing else is swallowed."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from nio_delayed import stop_on_signals


async def test_a_signal_cancels_the_block_runs_its_cleanup_and_ends_normally() -> None:
    cleaned_up = False
    async with stop_on_signals(signal.SIGUSR1) as shutdown:
        try:
            asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGUSR1)
            await asyncio.sleep(30)  # stands for sync_forever()
        finally:
            cleaned_up = True
    assert cleaned_up
    assert shutdown.signal is signal.SIGUSR1
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0  # the task can go on awaiting normally
    await asyncio.sleep(0)


async def test_the_handlers_are_removed_on_leaving() -> None:
    async with stop_on_signals(signal.SIGUSR2) as shutdown:
        pass
    assert shutdown.signal is None
    loop = asyncio.get_running_loop()
    assert not loop.remove_signal_handler(signal.SIGUSR2)  # nothing left to remove


async def test_a_cancel_that_is_not_a_signal_still_propagates() -> None:
    async def body() -> None:
        async with stop_on_signals(signal.SIGUSR1):
            await asyncio.sleep(30)

    task = asyncio.create_task(body())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_exception_in_the_block_is_not_swallowed() -> None:
    with pytest.raises(ValueError, match="boom"):
        async with stop_on_signals(signal.SIGUSR1):
            raise ValueError("boom")
