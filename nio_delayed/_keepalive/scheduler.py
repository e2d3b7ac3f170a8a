"""The one task that owns the schedule. It wakes when a switch is due (or its deadline passes),
hands due switches to short request tasks (which wait their turn in the request budget), and
notices when the event loop or the host stood still."""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from ..clock import TimerHandle
from .context import KeepAliveContext
from .switch import SwitchEventKind, SwitchRuntime

__all__ = ["Deadlines", "Scheduler"]

T = TypeVar("T")


class Deadlines(Generic[T]):
    """A heap of (time, item). Entries are never removed from the middle: ``is_current`` tells
    the ones that still count, and the others are dropped when they reach the top."""

    def __init__(self, is_current: Callable[[float, T], bool]) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()
        self._is_current = is_current

    def push(self, at: float, item: T) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), item))

    def next_time(self) -> float | None:
        """The earliest time of a current entry."""
        while self._heap and not self._is_current(self._heap[0][0], self._heap[0][2]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> tuple[float, T] | None:
        """The earliest current entry if its time has come."""
        at = self.next_time()
        if at is None or at > now:
            return None
        _, _, item = heapq.heappop(self._heap)
        return at, item


Act = Callable[[SwitchRuntime], Awaitable[None]]


class Scheduler:
    """The due heap, the deadline watch, and the task that wakes for them."""

    def __init__(
        self, context: KeepAliveContext, *, stall_threshold: float, track_lateness: bool
    ) -> None:
        self._ctx = context
        self._stall_threshold = stall_threshold
        self.stalls = 0
        #: With ``track_lateness``: how late (s) each restart left against its schedule.
        self.lateness: collections.deque[float] | None = (
            collections.deque(maxlen=100_000) if track_lateness else None
        )
        self._due: Deadlines[tuple[int, SwitchRuntime]] = Deadlines(self._still_due)
        self._watch: Deadlines[SwitchRuntime] = Deadlines(self._still_watched)
        self._wake = asyncio.Event()
        self._planned_wake: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def _still_due(self, at: float, entry: tuple[int, SwitchRuntime]) -> bool:
        generation, switch = entry
        return generation == switch.generation and switch in self._ctx.switches

    @staticmethod
    def _still_watched(at: float, switch: SwitchRuntime) -> bool:
        return switch.machine.deadline == at

    # -- what others tell it ---------------------------------------------------------------

    def schedule(self, switch: SwitchRuntime) -> None:
        """Act on the switch at its machine's ``next_at`` (and no longer at any earlier plan)."""
        switch.generation += 1
        next_at = switch.machine.next_at
        if next_at is not None and switch in self._ctx.switches:
            self._due.push(next_at, (switch.generation, switch))
            self._wake_by(next_at)

    def watch_deadline(self, switch: SwitchRuntime) -> None:
        """Wake at the switch's deadline, so that one passing unconfirmed is reported on time
        (also when the switch is held back by the request budget)."""
        deadline = switch.machine.deadline
        if deadline is not None and deadline != switch.watched_deadline:
            switch.watched_deadline = deadline
            self._watch.push(deadline, switch)
            self._wake_by(deadline)

    def _wake_by(self, at: float) -> None:
        if self._planned_wake is None or at < self._planned_wake:
            self._wake.set()  # sooner than the scheduler means to wake: tell it

    def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # -- the loop --------------------------------------------------------------------------

    async def run(self, act: Act) -> None:
        clock = self._ctx.clock
        expected: float | None = None
        while True:
            now = clock.now()
            if expected is not None and now - expected > self._stall_threshold:
                self._on_stall(now, now - expected)
            self._check_deadlines(now)
            self._dispatch_due(now, act)
            wake_at = self._next_wake(now)
            self._planned_wake = wake_at
            self._wake.clear()
            timer: TimerHandle | None = None
            if wake_at is not None:
                timer = clock.call_later(wake_at - now, self._wake.set)
            expected = wake_at
            try:
                await self._wake.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    def _on_stall(self, now: float, late: float) -> None:
        """The scheduler woke ``late`` seconds late: every switch due meanwhile acts at once."""
        self.stalls += 1
        for switch in self._ctx.switches:
            machine = switch.machine
            if machine.deadline_passed(now):
                self._ctx.emit(
                    switch,
                    SwitchEventKind.PROBABLY_FIRED,
                    f"its deadline passed while the event loop or host stalled ({late:.2f} s); "
                    "verifying",
                )
            elif machine.next_at is not None and machine.next_at <= now:
                self._ctx.emit(
                    switch, SwitchEventKind.STALL, f"restart overdue after a {late:.2f} s stall"
                )

    def _check_deadlines(self, now: float) -> None:
        while (entry := self._watch.pop_due(now)) is not None:
            _, switch = entry
            if switch.machine.deadline_passed(now):
                self._ctx.emit(
                    switch,
                    SwitchEventKind.PROBABLY_FIRED,
                    "the deadline passed without a confirmed restart",
                )

    def _dispatch_due(self, now: float, act: Act) -> None:
        while (entry := self._due.pop_due(now)) is not None:
            due, (_, switch) = entry
            if switch.busy:
                continue  # running: it is scheduled again when its request ends
            if self.lateness is not None:
                self.lateness.append(now - due)
            switch.idle.clear()
            task = switch.act_task = asyncio.create_task(self._request(switch, act))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _next_wake(self, now: float) -> float | None:
        times = [t for t in (self._due.next_time(), self._watch.next_time()) if t is not None]
        return min(times) if times else None

    async def _request(self, switch: SwitchRuntime, act: Act) -> None:
        try:
            await act(switch)
        finally:
            switch.idle.set()
            switch.act_task = None
            self.watch_deadline(switch)
            self.schedule(switch)
