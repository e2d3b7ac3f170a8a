"""The keep-alive manager: restarts any number of dead-man's switches from one scheduler.

One task owns the schedule (a heap of "act next at" times). Due switches are handed to short
request tasks, at most ``max_in_flight`` at a time. A 429 closes one gate for the whole client
until the server's hint has passed, and shrinks the window of requests in flight to one; it
grows back as answers succeed (no stampede when the gate opens). The decisions of each switch
(state, deadline, back-off) live in :mod:`nio_delayed.switch_machine`; this module does the I/O.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from nio.responses import SyncResponse

from .clock import Clock, SystemClock, TimerHandle
from .errors import ErrorKind
from .models import DelayedEvent, DelayedEventStatus
from .responses import (
    DelayedEventError,
    DelayedEventsListResponse,
    DelayedEventsSupportError,
    GetDelayedEventResponse,
    RoomPutStateDelayedResponse,
    RoomSendDelayedResponse,
    UpdateDelayedEventResponse,
)
from .support import Dialect
from .switch import (
    AliveEvent,
    DeadMansSwitch,
    ExitPolicy,
    KeepAliveError,
    LeftoverPolicy,
    LostPolicy,
    Overwrite,
    OverwritePolicy,
    SwitchArmError,
    SwitchEvent,
    SwitchEventKind,
    UnsupportedServerError,
    _SwitchSettings,
)
from .switch_machine import Backoff, SwitchMachine, SwitchState, SwitchStats, default_interval
from .transport import RequestPolicy
from .validation import (
    check_content,
    check_event,
    check_event_type,
    check_state_key,
    delay_to_ms,
)

if TYPE_CHECKING:
    from .mixin import DelayedEventsMixin

__all__ = ["EventStream", "KeepAliveManager"]

logger = logging.getLogger("nio_delayed")

#: Where a message switch keeps its key (see ``KeepAliveManager.add``).
SWITCH_KEY_FIELD = "org.nio_delayed.switch"
ENCRYPTED_TYPE = "m.room.encrypted"
_GONE = (ErrorKind.NOT_FOUND, ErrorKind.CONFLICT)
# Errors after which re-arming cannot succeed by trying again.
_HOPELESS = (
    ErrorKind.FORBIDDEN,
    ErrorKind.INVALID,
    ErrorKind.UNSUPPORTED,
    ErrorKind.DELAY_TOO_LARGE,
    ErrorKind.SENT_IMMEDIATELY,
)
_LOG_LEVELS = {
    SwitchEventKind.RESTART_FAILED: logging.INFO,
    SwitchEventKind.RATE_LIMITED: logging.INFO,
    SwitchEventKind.ALIVE_PUBLISHED: logging.DEBUG,
    SwitchEventKind.AT_RISK: logging.WARNING,
    SwitchEventKind.PROBABLY_FIRED: logging.WARNING,
    SwitchEventKind.LOST: logging.WARNING,
    SwitchEventKind.DELAY_LOWERED: logging.WARNING,
    SwitchEventKind.ALIVE_FAILED: logging.WARNING,
    SwitchEventKind.STALL: logging.WARNING,
    SwitchEventKind.FAILED: logging.ERROR,
    SwitchEventKind.OVERWRITTEN: logging.WARNING,
}
# States in which a switch's event is (or may be) scheduled: an overwrite concerns it.
_GUARDED = (SwitchState.ARMED, SwitchState.AT_RISK, SwitchState.PROBABLY_FIRED)


class EventStream:
    """Switch events as an async iterator. It keeps the newest ``maxsize`` events; older ones
    are dropped (and counted in ``dropped``) if the reader falls behind."""

    def __init__(self, manager: KeepAliveManager, maxsize: int) -> None:
        self._manager = manager
        self._queue: asyncio.Queue[SwitchEvent | None] = asyncio.Queue(maxsize)
        self.dropped = 0

    def put(self, event: SwitchEvent | None) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    def close(self) -> None:
        """End the iteration (also done when the manager closes)."""
        self._manager.streams.discard(self)
        self.put(None)

    def __aiter__(self) -> AsyncIterator[SwitchEvent]:
        return self

    async def __anext__(self) -> SwitchEvent:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event


class KeepAliveManager:
    """Owns dead-man's switches and keeps them from firing while the process lives.

        async with KeepAliveManager(client) as manager:
            await manager.add(room_id, "m.room.message", offline, delay=timedelta(seconds=30))
            ...

    ``request_timeout``: the longest one restart attempt may take (less when the deadline is
    nearer). ``max_in_flight``: requests at once. ``stall_threshold``: how late (s) the scheduler
    may wake before it reports an event-loop stall or a host suspend. ``track_lateness`` keeps
    how late each restart left (see ``lateness``). ``clock`` and ``seed`` are for tests.
    """

    def __init__(
        self,
        client: DelayedEventsMixin,
        *,
        request_timeout: float = 10.0,
        max_in_flight: int = 32,
        stall_threshold: float = 1.0,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
        track_lateness: bool = False,
    ) -> None:
        if request_timeout <= 0 or max_in_flight < 1 or stall_threshold <= 0:
            raise ValueError("request_timeout and stall_threshold must be > 0, max_in_flight >= 1")
        self.client = client
        self.clock: Clock = clock or SystemClock()
        self.request_timeout = request_timeout
        self.max_in_flight = max_in_flight
        self.stall_threshold = stall_threshold
        self.backoff = backoff or Backoff()
        self._restart_policy = self._build_policy(request_timeout, 1)
        self.rng = random.Random(seed)
        self.streams: set[EventStream] = set()
        self.stalls = 0
        self.gate_closures = 0
        #: With ``track_lateness=True``: how late (s) each restart left against its schedule
        #: (the newest 100,000).
        self.lateness: collections.deque[float] | None = (
            collections.deque(maxlen=100_000) if track_lateness else None
        )
        self._switches: dict[int, DeadMansSwitch] = {}
        self._by_identity: dict[tuple[str, str, str | None, object], DeadMansSwitch] = {}
        self._heap: list[tuple[float, int, int, DeadMansSwitch]] = []
        self._watch: list[tuple[float, int, DeadMansSwitch]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._planned_wake: float | None = None
        self._gate_until = 0.0
        # After a 429, requests leave at most one per ``_pace`` seconds: the server's hint is
        # roughly its rate. Each success halves the pace: a lone 429 costs little.
        self._pace = 0.0
        self._next_send = 0.0
        self._window = max_in_flight
        self._in_flight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._callbacks: list[Callable[[SwitchEvent], None]] = []
        self._leftovers: list[DelayedEvent] = []
        self._dialect: Dialect | None = None
        self._max_delay_ms: int | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._close_task: asyncio.Future[None] | None = None
        self._closing = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the server and take stock of switches a previous process left scheduled.
        Called by ``add()`` and ``async with``; safe to call again."""
        async with self._start_lock:
            if self._scheduler is not None:
                return
            if self._close_task is not None:
                raise KeepAliveError("this keep-alive manager is closed")
            support = await self.client.delayed_events_support()
            if isinstance(support, DelayedEventsSupportError):
                raise KeepAliveError(
                    f"could not learn whether the server supports delayed events: {support}",
                    support,
                )
            if not support.supported:
                raise UnsupportedServerError(
                    f"the server does not support delayed events: {support.reason}; "
                    "nothing was sent"
                )
            self._dialect = support.dialect
            self._max_delay_ms = support.max_delay_ms
            listing = await self.client.delayed_events(policy=self._policy(self.request_timeout, 3))
            if not isinstance(listing, DelayedEventsListResponse):
                raise KeepAliveError(
                    f"could not list the scheduled delayed events: {listing}", listing
                )
            self._leftovers = listing.scheduled
            self.client._sync_observers.add(self._on_sync)
            self._loop = asyncio.get_running_loop()
            self._scheduler = asyncio.create_task(
                self._run_scheduler(), name="nio-delayed keep-alive"
            )

    async def __aenter__(self) -> KeepAliveManager:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every switch by its exit policy, then the scheduler. Safe to call again."""
        self._begin_close()
        assert self._close_task is not None
        await asyncio.shield(self._close_task)

    def close_soon(self) -> None:
        """Begin :meth:`close` from anywhere, a signal handler included; returns at once.

        loop.add_signal_handler(signal.SIGTERM, manager.close_soon)
        """
        loop = self._loop
        if loop is None:  # not started yet: a handler installed on the loop runs inside it
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
        if loop is not None and self._close_task is None:
            loop.call_soon_threadsafe(self._begin_close)

    def _begin_close(self) -> None:
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
            self._closing.set()

    async def wait_closed(self) -> None:
        """Wait until the manager is closed (by :meth:`close` or :meth:`close_soon`)."""
        await self._closing.wait()
        assert self._close_task is not None
        await asyncio.shield(self._close_task)

    @property
    def closed(self) -> bool:
        return self._close_task is not None

    async def _close(self) -> None:
        self.client._sync_observers.discard(self._on_sync)
        switches = list(self._switches.values())
        await asyncio.gather(*(self.stop_switch(s) for s in switches))
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        for task in list(self._tasks):
            task.cancel()
        for stream in list(self.streams):
            stream.close()

    # -- observing -------------------------------------------------------------------------

    @property
    def switches(self) -> list[DeadMansSwitch]:
        """The running switches (not stopped, fired or failed)."""
        return list(self._switches.values())

    def on_event(self, callback: Callable[[SwitchEvent], None]) -> None:
        """Call ``callback`` (synchronously) with every event of every switch."""
        self._callbacks.append(callback)

    def events(self, maxsize: int = 1000) -> EventStream:
        """An async iterator over every event from now on (``async for event in ...``)."""
        stream = EventStream(self, maxsize)
        self.streams.add(stream)
        return stream

    def stats(self) -> SwitchStats:
        """Counters summed over the running switches."""
        total = SwitchStats()
        for switch in self._switches.values():
            total.add(switch.machine.stats)
        return total

    def _emit(
        self,
        switch: DeadMansSwitch,
        kind: SwitchEventKind,
        message: str,
        error: DelayedEventError | None = None,
    ) -> None:
        event = SwitchEvent(kind, switch, switch.state, message, self.clock.now(), error)
        level = _LOG_LEVELS.get(kind, logging.INFO)
        if logger.isEnabledFor(level):
            logger.log(level, "%r: %s: %s", switch, kind.value, message)
        for callback in (*self._callbacks, *switch.callbacks):
            try:
                callback(event)
            except Exception:  # a broken callback must not stop the keep-alive
                logger.exception("keep-alive event callback failed")
        for stream in self.streams:
            stream.put(event)
        switch.state_changed()

    # -- adding ----------------------------------------------------------------------------

    async def add(
        self,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        *,
        delay: timedelta | int,
        state_key: str | None = None,
        restart_interval: timedelta | float | None = None,
        alive: AliveEvent | None = None,
        on_exit: ExitPolicy = ExitPolicy.SEND,
        on_lost: LostPolicy = LostPolicy.REARM,
        on_leftover: LeftoverPolicy = LeftoverPolicy.ADOPT,
        on_overwrite: OverwritePolicy = OverwritePolicy.REARM,
        key: str = "default",
        ignore_unverified_devices: bool = False,
    ) -> DeadMansSwitch:
        """Arm a switch and keep it from firing; returns once it is armed (and "alive" sent).

        ``state_key=None`` makes the event a message; a string (``""`` included) a state event.
        ``restart_interval`` defaults to a third of the delay (seconds or a timedelta).
        ``key`` tells message switches of one type in one room apart. A message switch's content
        carries it under ``org.nio_delayed.switch``, so that a restarted process knows its own
        leftovers even if their text changed (a state event is known by its state key).
        ``on_overwrite`` (state switches): what to do when another user writes the same state,
        seen in the client's sync (see :class:`OverwritePolicy`). In an encrypted room, message
        events are encrypted (``ignore_unverified_devices`` as for nio's ``room_send``).
        Raises ``InvalidInput`` for bad arguments, :class:`UnsupportedServerError` on a server
        without delayed events, :class:`SwitchArmError` if the event could not be scheduled.
        """
        if state_key is None:
            content = {**content, SWITCH_KEY_FIELD: check_state_key(key)}
        room_id, event_type, content, state_key = check_event(
            room_id, event_type, content, state_key
        )
        if alive is not None:
            alive = AliveEvent(
                check_event_type(alive.event_type),
                check_content(alive.content),
                None if alive.state_key is None else check_state_key(alive.state_key),
            )
        requested_ms = delay_to_ms(delay)
        if self._close_task is not None:
            raise KeepAliveError("this keep-alive manager is closed")
        await self.start()
        identity = _identity(room_id, event_type, state_key, content)
        other = self._by_identity.get(identity)
        if other is not None:
            raise KeepAliveError(f"{other!r} already guards this event")

        delay_ms = requested_ms
        if self._max_delay_ms is not None and requested_ms > self._max_delay_ms:
            delay_ms = self._max_delay_ms
        interval = _seconds(restart_interval) if restart_interval is not None else None
        if interval is None or interval >= delay_ms / 1000:
            interval = default_interval(delay_ms / 1000)
        settings = _SwitchSettings(
            room_id,
            event_type,
            content,
            state_key,
            requested_ms,
            delay_ms,
            alive,
            on_exit,
            on_lost,
            on_leftover,
            on_overwrite,
            ignore_unverified_devices,
        )
        switch = DeadMansSwitch(
            self, settings, SwitchMachine(delay_ms / 1000, interval, self.backoff, self.rng)
        )
        if delay_ms < requested_ms:
            self._emit(
                switch,
                SwitchEventKind.DELAY_LOWERED,
                f"the server allows at most {delay_ms} ms: delay lowered from {requested_ms} ms, "
                f"restart interval {interval:.3g} s",
            )

        leftovers = self._take_leftovers(switch)
        if on_leftover is LeftoverPolicy.ADOPT:
            await self._adopt(switch, leftovers)
        if switch.delay_id is None:
            error = await self._arm(switch)
            if error is not None:
                switch.machine.state = SwitchState.FAILED
                self._emit(switch, SwitchEventKind.FAILED, f"could not arm: {error}", error)
                raise SwitchArmError(f"could not arm {switch!r}: {error}", error)
            self._emit(switch, SwitchEventKind.ARMED, f"armed ({switch.delay_id!r})")
        for leftover in leftovers:
            await self._cancel_leftover(switch, leftover)
        await self._publish_alive(switch)
        self._switches[id(switch)] = switch
        self._by_identity[identity] = switch
        if self._close_task is not None:
            # close() began while this switch was being armed, and did not see it.
            await self.stop_switch(switch)
            raise KeepAliveError("the keep-alive manager was closed while the switch was added")
        self._watch_deadline(switch)
        self._schedule(switch)
        return switch

    def _take_leftovers(self, switch: DeadMansSwitch) -> list[DelayedEvent]:
        """Leftovers of a previous process for this switch's event, latest due first."""

        wanted = _identity(switch.room_id, switch.event_type, switch.state_key, switch.content)

        def same(event: DelayedEvent) -> bool:
            event_type = event.type
            if event_type == ENCRYPTED_TYPE and event.state_key is None:
                event_type = switch.event_type  # its key is readable; its type is not
            return _identity(event.room_id, event_type, event.state_key, event.content) == wanted

        mine = [e for e in self._leftovers if same(e)]
        self._leftovers = [e for e in self._leftovers if not same(e)]
        return sorted(mine, key=lambda e: e.due_ts or 0, reverse=True)

    async def _adopt(self, switch: DeadMansSwitch, leftovers: list[DelayedEvent]) -> None:
        for leftover in list(leftovers):
            if leftover.content != switch.content or leftover.delay_ms != switch.delay_ms:
                # A different event now (or an encrypted one, whose text cannot be compared):
                # arm the new one, then cancel this one.
                continue
            sent_at = self.clock.now()
            sent_wall_ms = _wall_ms()
            resp = await self.client.restart_delayed_event(
                leftover.delay_id, policy=self._policy(self.request_timeout, 3)
            )
            leftovers.remove(leftover)
            if isinstance(resp, UpdateDelayedEventResponse):
                switch.delay_id = leftover.delay_id
                switch.armed_wall_ms = sent_wall_ms
                switch.machine.armed(sent_at)
                self._emit(
                    switch,
                    SwitchEventKind.ADOPTED,
                    f"took over {leftover.delay_id!r} from a previous process",
                )
                return
            if resp.kind not in _GONE:
                # Neither live nor gone for sure: leave it to be cancelled after arming.
                leftovers.append(leftover)

    async def _cancel_leftover(self, switch: DeadMansSwitch, leftover: DelayedEvent) -> None:
        resp = await self.client.cancel_delayed_event(
            leftover.delay_id, policy=self._policy(self.request_timeout, 3)
        )
        if isinstance(resp, UpdateDelayedEventResponse) or resp.kind in _GONE:
            self._emit(
                switch,
                SwitchEventKind.LEFTOVER_CANCELLED,
                f"cancelled {leftover.delay_id!r} left by a previous process",
            )
        else:
            self._emit(
                switch,
                SwitchEventKind.LEFTOVER_CANCELLED,
                f"could not cancel {leftover.delay_id!r} left by a previous process; "
                f"it may still fire: {resp}",
                resp,
            )

    # -- arming ----------------------------------------------------------------------------

    async def _arm(self, switch: DeadMansSwitch, attempts: int = 3) -> DelayedEventError | None:
        """Schedule the switch's event; on success the machine is armed. Returns the error."""
        switch.tx_id = switch.tx_id or f"nio-delayed-{uuid.uuid4()}"
        sent_at = self.clock.now()
        sent_wall_ms = _wall_ms()
        policy = self._policy(self.request_timeout, attempts)
        resp: RoomSendDelayedResponse | RoomPutStateDelayedResponse | DelayedEventError
        if switch.state_key is None:
            resp = await self.client.room_send_delayed(
                switch.room_id,
                switch.event_type,
                switch.content,
                switch.delay_ms,
                switch.tx_id,
                ignore_unverified_devices=switch.ignore_unverified_devices,
                policy=policy,
            )
        else:
            resp = await self.client.room_put_state_delayed(
                switch.room_id,
                switch.event_type,
                switch.content,
                switch.delay_ms,
                switch.state_key,
                policy=policy,
            )
        if isinstance(resp, DelayedEventError):
            if (
                resp.kind is ErrorKind.NETWORK
                and switch.state_key is not None
                and self._dialect is Dialect.LEGACY
            ):
                # A legacy /state request may have scheduled an event even though no answer came
                # (it has no transaction id): look before anyone tries again.
                found = await self._find_unowned(switch)
                if found is not None:
                    switch.delay_id = found.delay_id
                    switch.tx_id = None
                    switch.armed_wall_ms = sent_wall_ms
                    switch.machine.armed(sent_at)
                    return None
            return resp
        switch.delay_id = resp.delay_id
        switch.tx_id = None  # the next arming is a new event
        switch.armed_wall_ms = sent_wall_ms
        switch.machine.armed(sent_at)
        return None

    async def _find_unowned(self, switch: DeadMansSwitch) -> DelayedEvent | None:
        listing = await self.client.delayed_events(policy=self._policy(self.request_timeout, 3))
        if not isinstance(listing, DelayedEventsListResponse):
            return None
        owned = {s.delay_id for s in self._switches.values()}
        for event in listing.scheduled:
            if (event.room_id, event.type, event.state_key) == (
                switch.room_id,
                switch.event_type,
                switch.state_key,
            ) and event.delay_id not in owned:
                return event
        return None

    async def _publish_alive(self, switch: DeadMansSwitch) -> None:
        alive = switch.alive
        if alive is None:
            return
        result = await self.client.send_event_bounded(
            switch.room_id,
            alive.event_type,
            alive.content,
            alive.state_key,
            ignore_unverified_devices=switch.ignore_unverified_devices,
            policy=self._policy(self.request_timeout, 3),
        )
        switch.alive_pending = isinstance(result, DelayedEventError)
        if isinstance(result, DelayedEventError):
            self._emit(
                switch,
                SwitchEventKind.ALIVE_FAILED,
                f"could not publish the alive event (will retry): {result}",
                result,
            )
        else:
            self._emit(
                switch, SwitchEventKind.ALIVE_PUBLISHED, f"alive event {alive.event_type} published"
            )

    # -- the scheduler ---------------------------------------------------------------------

    def _schedule(self, switch: DeadMansSwitch) -> None:
        switch.generation += 1
        next_at = switch.machine.next_at
        if next_at is not None and id(switch) in self._switches:
            heapq.heappush(self._heap, (next_at, next(self._seq), switch.generation, switch))
            if self._planned_wake is None or next_at < self._planned_wake:
                self._wake.set()  # sooner than the scheduler means to wake: tell it

    def _watch_deadline(self, switch: DeadMansSwitch) -> None:
        """Wake at the switch's deadline, so that one passing unconfirmed is reported on time
        (also when the switch is held behind the rate-limit gate)."""
        deadline = switch.machine.deadline
        if deadline is not None and deadline != switch.watched_deadline:
            switch.watched_deadline = deadline
            heapq.heappush(self._watch, (deadline, next(self._seq), switch))
            if self._planned_wake is None or deadline < self._planned_wake:
                self._wake.set()

    async def _run_scheduler(self) -> None:
        expected: float | None = None
        while True:
            now = self.clock.now()
            if expected is not None and now - expected > self.stall_threshold:
                self._on_stall(now, now - expected)
            self._check_deadlines(now)
            self._dispatch_due(now)
            wake_at = self._next_wake(now)
            self._planned_wake = wake_at
            self._wake.clear()
            timer: TimerHandle | None = None
            if wake_at is not None:
                timer = self.clock.call_later(wake_at - now, self._wake.set)
            expected = wake_at
            try:
                await self._wake.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    def _on_stall(self, now: float, late: float) -> None:
        """The scheduler woke ``late`` seconds late: every switch due meanwhile acts at once."""
        self.stalls += 1
        for switch in list(self._switches.values()):
            machine = switch.machine
            if machine.deadline_passed(now):
                self._emit(
                    switch,
                    SwitchEventKind.PROBABLY_FIRED,
                    f"its deadline passed while the event loop or host stalled ({late:.2f} s); "
                    "verifying",
                )
            elif machine.next_at is not None and machine.next_at <= now:
                self._emit(
                    switch, SwitchEventKind.STALL, f"restart overdue after a {late:.2f} s stall"
                )

    def _check_deadlines(self, now: float) -> None:
        while self._watch and self._watch[0][0] <= now:
            deadline, _, switch = heapq.heappop(self._watch)
            if switch.machine.deadline == deadline and switch.machine.deadline_passed(now):
                self._emit(
                    switch,
                    SwitchEventKind.PROBABLY_FIRED,
                    "the deadline passed without a confirmed restart",
                )

    def _dispatch_due(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            if now < max(self._gate_until, self._next_send) or self._in_flight >= self._window:
                return
            due, _, generation, switch = heapq.heappop(self._heap)
            if generation != switch.generation or switch.busy or id(switch) not in self._switches:
                continue  # rescheduled, running, or stopped since
            if self.lateness is not None:
                self.lateness.append(now - due)
            if self._pace:
                self._next_send = now + self._pace
            switch.idle.clear()
            self._in_flight += 1
            task = asyncio.create_task(self._act(switch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _next_wake(self, now: float) -> float | None:
        times = []
        if self._heap:
            top = self._heap[0][0]
            if top <= now and self._in_flight >= self._window:
                pass  # a finishing request wakes the scheduler
            else:
                times.append(max(top, self._gate_until, self._next_send))
        if self._watch:
            times.append(self._watch[0][0])
        return min(times) if times else None

    async def _act(self, switch: DeadMansSwitch) -> None:
        overwrite_before = switch.overwrite
        try:
            with self.clock.busy():
                if switch.overwrite is not None and switch.state in _GUARDED:
                    await self._overwritten(switch)
                elif switch.state is SwitchState.REARMING:
                    await self._rearm(switch)
                else:
                    await self._restart(switch)
        except Exception as exc:  # a bug must show, and must not stop the other switches
            logger.exception("keep-alive step failed for %r", switch)
            switch.machine.failed(self.clock.now())
            self._emit(switch, SwitchEventKind.RESTART_FAILED, f"internal error: {exc!r}")
        finally:
            switch.idle.set()
            if self._in_flight >= self._window:
                self._wake.set()  # switches may be waiting for this slot
            self._in_flight -= 1
            arrived = switch.overwrite is not None and overwrite_before is None
            if arrived and switch.machine.next_at is not None:
                # An overwrite seen while this request ran is handled next, at once.
                switch.resume_at = switch.machine.next_at
                switch.machine.next_at = min(switch.machine.next_at, self.clock.now())
            self._watch_deadline(switch)
            self._schedule(switch)

    async def _restart(self, switch: DeadMansSwitch) -> None:
        machine = switch.machine
        assert switch.delay_id is not None
        sent_at = self.clock.now()
        if machine.deadline_passed(sent_at):
            # Due before its deadline, sent after it: the loop or the host stood still.
            self._emit(
                switch,
                SwitchEventKind.PROBABLY_FIRED,
                "its deadline passed before its restart could be sent (event loop or host "
                "stalled?); verifying",
            )
        if machine.failures:
            machine.stats.retries += 1
        timeout = machine.attempt_timeout(sent_at, self.request_timeout)
        resp = await self.client.restart_delayed_event(
            switch.delay_id, policy=self._policy(timeout, 1)
        )
        now = self.clock.now()
        if id(switch) not in self._switches:
            return  # stopped meanwhile
        if isinstance(resp, UpdateDelayedEventResponse):
            self._window = min(self.max_in_flight, self._window * 2)
            self._pace = self._pace / 2 if self._pace > 0.001 else 0.0
            rate_limited = self._pace > 0 or now < self._gate_until
            previous = machine.restarted(sent_at, now, keep_phase=not rate_limited)
            if previous in (SwitchState.AT_RISK, SwitchState.PROBABLY_FIRED):
                self._emit(
                    switch,
                    SwitchEventKind.RECOVERED,
                    f"restart confirmed again (was {previous.value})",
                )
            if switch.alive_pending:
                await self._publish_alive(switch)
            return
        if resp.kind in _GONE:
            await self._lost(switch, resp)
            return
        retry_after = self._note_rate_limit(switch, resp, now)
        previous = machine.state
        state = machine.failed(now, retry_after)
        self._emit(switch, SwitchEventKind.RESTART_FAILED, f"restart failed: {resp}", resp)
        if state is not previous:
            kind = (
                SwitchEventKind.PROBABLY_FIRED
                if state is SwitchState.PROBABLY_FIRED
                else SwitchEventKind.AT_RISK
            )
            left = (
                "" if machine.deadline is None else f"; deadline in {machine.deadline - now:.2f} s"
            )
            self._emit(switch, kind, f"restarts are failing{left}", resp)

    def _note_rate_limit(
        self, switch: DeadMansSwitch, resp: DelayedEventError, now: float
    ) -> float | None:
        if resp.kind is not ErrorKind.RATE_LIMITED:
            return None
        retry_after = (resp.retry_after_ms / 1000) if resp.retry_after_ms is not None else None
        wait = retry_after if retry_after is not None else self.backoff.wait(1, self.rng)
        switch.machine.stats.rate_limit_waits += 1
        # One gate for all switches of this client; once it opens, one request at a time, paced
        # at the hint.
        if now + wait > self._gate_until:
            self.gate_closures += 1
            self._gate_until = now + wait
        self._window = 1
        self._pace = max(self._pace, wait)
        self._emit(
            switch,
            SwitchEventKind.RATE_LIMITED,
            f"rate limited: every switch waits {wait:.2f} s",
            resp,
        )
        return wait

    async def _lost(self, switch: DeadMansSwitch, resp: DelayedEventError) -> None:
        overwrite = switch.overwrite or await self._find_overwrite(switch)
        if overwrite is not None:
            # Gone because another user wrote the state (Synapse's rule), seen before the sync
            # showed it: the overwrite policy decides, not the loss policy.
            switch.overwrite = None
            await self._apply_overwrite(switch, overwrite, still_scheduled=False)
            return
        reason = await self._why_gone(switch)
        rearm = switch.on_lost is LostPolicy.REARM
        switch.machine.lost(self.clock.now(), rearm)
        self._emit(
            switch, SwitchEventKind.LOST, f"the server no longer has the event: {reason}", resp
        )
        if not rearm:
            self._forget(switch)

    async def _why_gone(self, switch: DeadMansSwitch) -> str:
        assert switch.delay_id is not None
        found = await self.client.get_delayed_event(
            switch.delay_id, policy=self._policy(self.request_timeout, 1)
        )
        if isinstance(found, GetDelayedEventResponse):
            event = found.delayed_event
            detail = f": {event.error}" if event.error else ""
            return f"it was {event.status.value}{detail}"
        # Synapse keeps no record of finalised events.
        return (
            "it was sent, cancelled, or overwritten by another user's state "
            "(the server keeps no record)"
        )

    async def _rearm(self, switch: DeadMansSwitch) -> None:
        error = await self._arm(switch, attempts=1)
        if id(switch) not in self._switches:
            return
        if error is None:
            switch.machine.stats.rearms += 1
            self._emit(switch, SwitchEventKind.REARMED, f"armed again ({switch.delay_id!r})")
            if switch.rearm_quietly:
                switch.rearm_quietly = False
            else:
                await self._publish_alive(switch)
            return
        if error.kind in _HOPELESS:
            switch.machine.state = SwitchState.FAILED
            self._emit(switch, SwitchEventKind.FAILED, f"cannot arm again: {error}", error)
            self._forget(switch)
            return
        retry_after = self._note_rate_limit(switch, error, self.clock.now())
        switch.machine.failed(self.clock.now(), retry_after)
        self._emit(
            switch,
            SwitchEventKind.RESTART_FAILED,
            f"arming again failed (will retry): {error}",
            error,
        )

    # -- the state-overwrite guard -------------------------------------------------------

    def _on_sync(self, response: SyncResponse) -> None:
        """Look through a sync for state written by another user at a guarded (room, type,
        state key). Runs inside nio's response handling: it only notes, the scheduler acts."""
        me = self.client.user_id
        for room_id, info in response.rooms.join.items():
            for event in (*info.state, *info.timeline.events):
                source = getattr(event, "source", None)
                if not isinstance(source, dict):
                    continue
                state_key = source.get("state_key")
                if not isinstance(state_key, str):
                    continue
                identity = _identity(room_id, source.get("type", ""), state_key, source)
                switch = self._by_identity.get(identity)
                overwrite = None if switch is None else _overwrite_of(switch, source, me)
                if switch is not None and overwrite is not None:
                    self._note_overwrite(switch, overwrite)

    def _note_overwrite(self, switch: DeadMansSwitch, overwrite: Overwrite) -> None:
        if switch.overwrite is not None or switch.state not in _GUARDED:
            return
        if overwrite.event_id == switch.last_overwrite_id:
            return  # the same write again (a later sync can repeat state): handled already
        switch.last_overwrite_id = overwrite.event_id
        switch.overwrite = overwrite
        if not switch.busy:
            switch.resume_at = switch.machine.next_at
            switch.machine.next_at = self.clock.now()
            self._schedule(switch)

    async def _find_overwrite(self, switch: DeadMansSwitch) -> Overwrite | None:
        """For a state switch whose event is gone: did another user write the state since it was
        scheduled? (Synapse's rule cancels it then.) One look at the current state event."""
        if switch.state_key is None:
            return None
        current = await self.client._state_event(
            switch.room_id,
            switch.event_type,
            switch.state_key,
            self._policy(self.request_timeout, 1),
        )
        if not isinstance(current, dict):
            return None
        overwrite = _overwrite_of(switch, current, self.client.user_id)
        if overwrite is not None:
            switch.last_overwrite_id = overwrite.event_id
        return overwrite

    async def _overwritten(self, switch: DeadMansSwitch) -> None:
        """Another user wrote the guarded state: find out whether the server kept our event,
        then apply the switch's overwrite policy."""
        overwrite = switch.overwrite
        assert overwrite is not None
        assert switch.delay_id is not None
        found = await self.client.get_delayed_event(
            switch.delay_id, policy=self._policy(self.request_timeout, 1)
        )
        if id(switch) not in self._switches:
            return
        if isinstance(found, GetDelayedEventResponse):
            still_scheduled = found.delayed_event.status is DelayedEventStatus.SCHEDULED
        elif found.kind in _GONE:
            still_scheduled = False
        else:
            now = self.clock.now()
            switch.machine.failed(now, self._note_rate_limit(switch, found, now))
            self._emit(
                switch,
                SwitchEventKind.RESTART_FAILED,
                f"could not look at the event after {overwrite.sender}'s overwrite (will retry): "
                f"{found}",
                found,
            )
            return
        switch.overwrite = None
        await self._apply_overwrite(switch, overwrite, still_scheduled)

    async def _apply_overwrite(
        self, switch: DeadMansSwitch, overwrite: Overwrite, still_scheduled: bool
    ) -> None:
        policy = switch.on_overwrite
        what = f"{overwrite.sender} wrote {switch.event_type} {switch.state_key!r}"
        if not still_scheduled:
            what += "; the server had already cancelled ours (cancelled by state update)"
        if policy is OverwritePolicy.IGNORE and still_scheduled:
            # Nothing changed for our event: its restarts go on as they were planned.
            switch.machine.next_at = switch.resume_at
            self._emit(
                switch,
                SwitchEventKind.OVERWRITTEN,
                f"{what}; ignored (on_overwrite=ignore): ours stays armed",
            )
            return
        if still_scheduled:
            assert switch.delay_id is not None
            resp = await self.client.cancel_delayed_event(
                switch.delay_id, policy=self._policy(self.request_timeout, 1)
            )
            if id(switch) not in self._switches:
                return
            if isinstance(resp, DelayedEventError) and resp.kind not in _GONE:
                switch.overwrite = overwrite  # try again: ours must not fire over theirs
                retry_after = self._note_rate_limit(switch, resp, self.clock.now())
                switch.machine.failed(self.clock.now(), retry_after)
                self._emit(
                    switch,
                    SwitchEventKind.RESTART_FAILED,
                    f"{what}; could not cancel ours yet (will retry): {resp}",
                    resp,
                )
                return
            what += "; ours cancelled"
        if policy is OverwritePolicy.CANCEL:
            switch.machine.overwritten()
            self._emit(
                switch, SwitchEventKind.OVERWRITTEN, f"{what}; stopped (on_overwrite=cancel)"
            )
            self._forget(switch)
            return
        switch.machine.lost(self.clock.now(), rearm=True)
        switch.rearm_quietly = policy is OverwritePolicy.IGNORE
        then = (
            "arming a new one, without publishing alive (on_overwrite=ignore)"
            if switch.rearm_quietly
            else "arming a new one and publishing alive again (on_overwrite=rearm)"
        )
        self._emit(switch, SwitchEventKind.OVERWRITTEN, f"{what}; {then}")

    def _forget(self, switch: DeadMansSwitch) -> None:
        if self._switches.pop(id(switch), None) is not None:
            identity = _identity(
                switch.room_id, switch.event_type, switch.state_key, switch.content
            )
            self._by_identity.pop(identity, None)
        switch.generation += 1

    # -- stopping --------------------------------------------------------------------------

    async def stop_switch(self, switch: DeadMansSwitch, policy: ExitPolicy | None = None) -> None:
        if switch.stop_task is None:
            switch.stop_task = asyncio.ensure_future(self._stop(switch, policy or switch.on_exit))
        await asyncio.shield(switch.stop_task)

    async def _stop(self, switch: DeadMansSwitch, policy: ExitPolicy) -> None:
        if switch.state.is_final:
            return
        self._forget(switch)
        switch.machine.state = SwitchState.STOPPING
        await switch.idle.wait()  # an attempt under way finishes first: it may change the exit
        message = "stopped; the event was left to fire by itself"
        error: DelayedEventError | None = None
        if switch.delay_id is not None and policy is not ExitPolicy.KEEP:
            bounded = self._policy(self.request_timeout, 3)
            if policy is ExitPolicy.SEND:
                resp = await self.client.send_delayed_event_now(switch.delay_id, policy=bounded)
            else:
                resp = await self.client.cancel_delayed_event(switch.delay_id, policy=bounded)
            done = "sent" if policy is ExitPolicy.SEND else "cancelled"
            if isinstance(resp, UpdateDelayedEventResponse):
                message = f"stopped; the event was {done}"
            elif resp.kind in _GONE:
                message = "stopped; the event was already finalised"
            else:
                error = resp
                message = (
                    f"stopped, but the event could not be {done} ({resp}); it stays scheduled and "
                    "fires by itself when its delay runs out"
                )
        switch.machine.state = SwitchState.STOPPED
        self._emit(switch, SwitchEventKind.STOPPED, message, error)

    def _policy(self, timeout: float, attempts: int) -> RequestPolicy:
        if timeout == self.request_timeout and attempts == 1:
            return self._restart_policy  # the common case, built once
        return self._build_policy(timeout, attempts)

    def _build_policy(self, timeout: float, attempts: int) -> RequestPolicy:
        return RequestPolicy(
            timeout=timeout,
            max_attempts=attempts,
            max_retry_after=min(10.0, timeout),
            backoff_initial=self.backoff.initial,
            backoff_max=min(self.backoff.maximum, timeout),
        )


def _identity(
    room_id: str, event_type: str, state_key: str | None, content: dict[str, Any]
) -> tuple[str, str, str | None, object]:
    """What makes two delayed events the same switch: room, type and state key; for a message,
    the switch key in its content (None for a message that no switch made)."""
    return (
        room_id,
        event_type,
        state_key,
        content.get(SWITCH_KEY_FIELD) if state_key is None else None,
    )


def _overwrite_of(switch: DeadMansSwitch, event: dict[str, Any], me: str) -> Overwrite | None:
    """``event`` (a state event at the switch's room, type and state key) as an overwrite of
    its event: written by another user, after our event was scheduled. Earlier writes are not:
    the server's rule ignores them too."""
    sender, ts, event_id = event.get("sender"), event.get("origin_server_ts"), event.get("event_id")
    if not isinstance(sender, str) or sender == me or not isinstance(event_id, str):
        return None
    if not isinstance(ts, int) or ts < switch.armed_wall_ms:
        return None
    return Overwrite(sender, event_id, ts)


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
