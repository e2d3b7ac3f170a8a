"""Living with a sync loop: end a bot cleanly on SIGINT or SIGTERM.

``sync_forever()`` never returns, and a plain SIGTERM kills the process without any cleanup, so
the switches' exit policies never run (the server then sends their events one delay later). With
:func:`stop_on_signals` a signal cancels the task running the block instead: every ``async with``
inside it unwinds (a ``dead_mans_switch`` block sends or cancels its event by its exit policy,
``client.close()`` in a ``finally`` stops the rest), and the block ends normally::

    async with stop_on_signals() as shutdown:
        await client.sync(timeout=0, full_state=True)  # first sync: rooms and members known
        delay = timedelta(seconds=30)
        async with client.dead_mans_switch(room_id, "m.room.message", offline, delay=delay):
            await client.sync_forever(timeout=30_000)
    print("stopped by", shutdown.signal)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

__all__ = ["Shutdown", "stop_on_signals"]


@dataclass
class Shutdown:
    """What ended a :func:`stop_on_signals` block: the signal, or ``None`` if it ended by
    itself (or by an exception, which is not swallowed)."""

    signal: signal.Signals | None = None


@contextlib.asynccontextmanager
async def stop_on_signals(
    *signals: signal.Signals,
) -> AsyncIterator[Shutdown]:
    """Run the block until it ends or one of ``signals`` (default: SIGINT and SIGTERM) arrives;
    a signal cancels the block's task and the block then ends without an exception.

    Unix only (it uses ``loop.add_signal_handler``). The handlers are removed on leaving.
    """
    chosen = signals or (signal.SIGINT, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("stop_on_signals() must be used inside a task")
    shutdown = Shutdown()

    def on_signal(received: signal.Signals) -> None:
        if shutdown.signal is None:  # a second Ctrl-C does not interrupt the clean-up
            shutdown.signal = received
            task.cancel()

    for sig in chosen:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield shutdown
    except asyncio.CancelledError:
        if shutdown.signal is None:
            raise  # cancelled by someone else: not ours to swallow
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()
    finally:
        for sig in chosen:
            loop.remove_signal_handler(sig)
