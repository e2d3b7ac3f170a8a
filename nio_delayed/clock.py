"""The keep-alive's sense of time, replaceable in tests (see ``nio_delayed.testing.FakeClock``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "SystemClock", "TimerHandle", "wall_ms"]


def wall_ms() -> int:
    """The wall clock in Unix milliseconds, as servers stamp their events."""
    return int(time.time() * 1000)


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Seconds on a clock that never goes back and keeps counting while the host sleeps."""

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...

    def busy(self) -> contextlib.AbstractContextManager[None]:
        """Marks real I/O in progress (a fake clock waits for it before moving time on)."""
        ...


# CLOCK_BOOTTIME counts time spent suspended, as the server's clock does; CLOCK_MONOTONIC does
# not, so after a suspend it would under-count how much of a delay has passed.
_CLOCK_ID = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.clock_gettime(_CLOCK_ID)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)

    def busy(self) -> contextlib.AbstractContextManager[None]:
        return _NOTHING  # real I/O needs no bookkeeping on a real clock


_NOTHING: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
