"""A clock that moves only when a test says so, for driving keep-alives deterministically.

    clock = FakeClock()
    manager = KeepAliveManager(client, clock=clock)
    server = FakeHomeserver(clock=clock)      # its delayed events fire on the same clock
    await clock.advance(30)                    # 30 s pass at once, in order
    await clock.stall(30)                      # 30 s pass with the event loop blocked

Real I/O still takes real time: code marks it with ``clock.busy()`` and ``advance`` waits for
it before moving on, so every request started at one moment is answered at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable, Iterator

__all__ = ["FakeClock"]

# Rounds of the event loop with nothing busy before the loop counts as settled.
_QUIET_ROUNDS = 30


class _Timer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A :class:`~nio_delayed.Clock` whose time moves only when the test says so: ``await
    advance(seconds)`` runs every timer due on the way, ``await stall(seconds)`` jumps as a
    blocked event loop would. Give the same one to a ``KeepAliveManager`` and a
    ``FakeHomeserver``."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._busy = 0

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self._now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1

    async def settle(self) -> None:
        """Run the event loop until nothing is busy and nothing more happens."""
        quiet = 0
        while quiet < _QUIET_ROUNDS:
            if self._busy:
                quiet = 0
                await asyncio.sleep(0.001)  # real I/O in flight: give it real time
            else:
                quiet += 1
                await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, firing timers in order, settling after each."""
        target = self._now + seconds
        await self.settle()
        while self._timers:
            when, _, timer = self._timers[0]
            if when > target:
                break
            heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
            await self.settle()
        self._now = target
        await self.settle()

    async def stall(self, seconds: float) -> None:
        """Let ``seconds`` pass with the event loop blocked (or the host asleep): timers due
        meanwhile fire in order, so the fake server keeps time and sends its events, but no
        task runs until the stall is over."""
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._now = max(self._now, when)
                timer.callback()
        self._now = target
        await self.settle()
