"""The keep-alive manager: restarts any number of dead-man's switches from one scheduler.

It assembles the parts: :mod:`.scheduler` owns the schedule and hands due switches to request
tasks, :mod:`.budget` models the server's rate limits and lets each request go in its turn,
:mod:`.planning` fits the switches' restarts into that budget and says what it cannot keep,
:mod:`.restart`, :mod:`.arming`, :mod:`.overwrite` and :mod:`.stopping` do the requests,
:mod:`.fired` knows a switch's event was sent when the client's sync shows it,
:mod:`.machine` decides each switch's state and timing, and :mod:`.events` reports it all.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from ..clock import Clock, SystemClock
from ..errors import ErrorKind
from ..limits import ServerLimits
from ..responses import (
    DelayedEventsListResponse,
    DelayedEventsSupportError,
    DelayedEventsSupportResponse,
)
from ..transport import MAX_POLICY_SECONDS
from ..validation import InvalidInput, seconds_of
from ..wire import OWNER_FIELD
from .arming import Arming
from .budget import Bucket, Priority
from .context import KeepAliveContext
from .events import EventStream, sum_stats
from .fired import FireWatch
from .machine import Backoff, SwitchMachine, SwitchStats, default_interval
from .options import check_switch
from .overwrite import OverwriteGuard
from .ownership import Ownership, key_names_owner
from .planning import Capacity, Planner
from .ports import KeepAliveClient
from .record import SwitchRecord
from .registry import Identity, identity
from .restart import Restarter
from .scheduler import Scheduler
from .stopping import Stopping
from .switch import (
    AliveEvent,
    DeadMansSwitch,
    ExitPolicy,
    KeepAliveError,
    LeftoverPolicy,
    LostPolicy,
    OverwritePolicy,
    SwitchEvent,
    SwitchEventKind,
    SwitchRuntime,
    SwitchSettings,
    UnsupportedServerError,
)

__all__ = ["KeepAliveManager"]

logger = logging.getLogger(__name__)

# The leftovers of a previous process fire unless they are listed, then adopted or cancelled:
# the listing tries as hard as each of those (each try waiting as long as the server asks).
_LISTING_ATTEMPTS = 8


class KeepAliveManager:
    """Owns dead-man's switches and keeps them from firing while the process lives.

        async with KeepAliveManager(client) as manager:
            await manager.add(room_id, "m.room.message", offline, delay=timedelta(seconds=30))
            ...

    ``limits``: the server's rate limits as far as you know them (default: the client's
    ``delayed_events_limits``, which defaults to Synapse's defaults); every request goes through
    a budget that models them and learns tighter ones from the server's answers (see
    :meth:`capacity`). ``request_timeout``: the longest one restart attempt may take (less when
    the deadline is nearer). ``max_in_flight``: requests on the wire at once. ``stall_threshold``:
    how late the scheduler may wake before it reports an event-loop stall or a host suspend.
    ``stop_timeout``: how long stopping a switch keeps trying to cancel or send its event (for
    instance through rate limits). ``track_lateness`` keeps how late each restart left (see
    ``lateness``). ``clock`` and ``seed`` are for tests.

    ``owner``: who this bot's switches belong to (default: the client's device id). It is
    written into each switch's content (``org.nio_delayed.owner``), and a switch adopts or
    cancels only the leftovers of its own owner: other devices and programs of the account are
    left alone (``FOREIGN_LEFTOVER``). Give a fixed id if the bot logs in anew (a new device) at
    every start. ``record_dir``: a directory of the bot's own (beside nio's store, say) where it
    records the events it armed, so that a restarted process finds them on a server that lists
    no delayed events; the files hold ``delay_id`` values and are the owner's alone (mode 0600).

    Durations are ``timedelta`` values; a bare number is still read as seconds, with a
    ``DeprecationWarning`` (refused from 1.0). A wrong value raises ``InvalidInput``.
    """

    def __init__(  # noqa: PLR0913  # the public signature: one keyword per option
        self,
        client: KeepAliveClient,
        *,
        limits: ServerLimits | None = None,
        request_timeout: timedelta | float = timedelta(seconds=10),
        max_in_flight: int = 32,
        stall_threshold: timedelta | float = timedelta(seconds=1),
        stop_timeout: timedelta | float = timedelta(seconds=30),
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
        track_lateness: bool = False,
        owner: str | None = None,
        record_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        # Durations are timedeltas; a bare number is still seconds (deprecated, warned).
        request_timeout = seconds_of(request_timeout, "request_timeout", maximum=MAX_POLICY_SECONDS)
        stall_threshold = seconds_of(stall_threshold, "stall_threshold")
        stop_timeout = seconds_of(stop_timeout, "stop_timeout", allow_zero=True)
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
            raise InvalidInput(f"max_in_flight must be an int, not {type(max_in_flight).__name__}")
        if max_in_flight < 1:
            raise InvalidInput("max_in_flight must be >= 1")
        if owner is not None and not (isinstance(owner, str) and 0 < len(owner) <= 255):
            raise InvalidInput("owner must be a non-empty string of at most 255 characters")
        self.client = client
        self._owner_id = owner
        self._record_dir = record_dir
        self.request_timeout = request_timeout
        self.max_in_flight = max_in_flight
        self.stall_threshold = stall_threshold
        self.backoff = backoff or Backoff()
        self.rng = random.Random(seed)
        ctx = self._ctx = KeepAliveContext(
            client,
            clock or SystemClock(),
            request_timeout=request_timeout,
            max_in_flight=max_in_flight,
            backoff=self.backoff,
            rng=self.rng,
            limits=limits or client.delayed_events_limits,
        )
        self._planner = Planner(ctx)
        ctx.switches.on_change = self._planner.replan
        ctx.budget.on_change = lambda _: self._planner.replan()
        self._scheduler = Scheduler(
            ctx, stall_threshold=stall_threshold, track_lateness=track_lateness
        )
        self._arming = Arming(ctx)
        self._guard = OverwriteGuard(ctx, self._scheduler.schedule)
        self._fires = FireWatch(ctx, self._scheduler.schedule)
        self._restarter = Restarter(ctx, self._arming, self._guard, self._fires)
        self._stopping = Stopping(ctx, stop_timeout)
        self._scheduler_task: asyncio.Task[None] | None = None
        #: The switches being added: what each guards (taken before add() first waits) and the
        #: task that arms it (close() interrupts it; it then cancels what it scheduled).
        self._reserved: set[Identity] = set()
        self._arming_tasks: set[asyncio.Task[None]] = set()
        self._start_lock = asyncio.Lock()
        self._close_task: asyncio.Future[list[DeadMansSwitch]] | None = None
        self._closing = asyncio.Event()
        self._close_policy: ExitPolicy | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def clock(self) -> Clock:
        return self._ctx.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        """Swap the clock before the first switch is added (tests use a fake one)."""
        self._ctx.clock = clock

    @property
    def owner(self) -> str:
        """Who this bot's switches belong to: the ``owner`` given, else the client's device id
        (fixed when the manager starts). Raises :class:`KeepAliveError` if there is neither (a
        client not logged in, or given a token by hand: then pass ``owner``)."""
        owner = self._ctx.ownership.owner or self._owner_id or self.client.device_id
        if not owner:
            raise KeepAliveError(
                "the client has no device id (log in first), and no owner was given: a switch "
                "must know which leftovers are its own"
            )
        return owner

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the server and take stock of switches a previous process left scheduled.
        Called by ``add()`` and ``async with``; safe to call again."""
        async with self._start_lock:
            if self._scheduler_task is not None:
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
            self._ctx.dialect = support.dialect
            self._ctx.max_delay_ms = support.max_delay_ms
            self._ctx.max_scheduled = support.max_scheduled
            await self._take_stock()
            if self._close_task is not None:  # close() began meanwhile: start nothing
                raise KeepAliveError("this keep-alive manager is closed")
            self.client.add_sync_observer(self._guard.on_sync)
            self.client.add_sync_observer(self._fires.on_sync)
            self._loop = asyncio.get_running_loop()
            self._scheduler_task = asyncio.create_task(
                self._scheduler.run(self._restarter.act), name="nio-delayed keep-alive"
            )

    async def _take_stock(self) -> None:
        """Find what is scheduled: the server's listing, else the bot's record."""
        owner = self.owner
        record = None
        if self._record_dir is not None:
            record = SwitchRecord(self._record_dir, self.client.user_id)
        recorded = record.load() if record is not None else []
        listing, _ = await self._ctx.request(
            Bucket.MANAGEMENT,
            Priority.KEEP,
            lambda _: self.client.delayed_events(policy=self._ctx.policy()),
            attempts=_LISTING_ATTEMPTS,
        )
        if isinstance(listing, DelayedEventsListResponse):
            leftovers = listing.scheduled
            if record is not None:
                # What the record holds and the server no longer has was sent or cancelled.
                live = {e.delay_id for e in leftovers}
                record.drop(e.delay_id for e in recorded if e.delay_id not in live)
        elif listing.kind is ErrorKind.UNSUPPORTED:
            # No listing: this bot's own record is all there is to adopt from.
            leftovers = [entry.as_leftover() for entry in recorded]
            if record is None:
                logger.warning(
                    "the server lists no delayed events, and no record_dir was given: "
                    "switches a previous process left scheduled cannot be found, and fire "
                    "when their delay runs out"
                )
        else:
            raise KeepAliveError(f"could not list the scheduled delayed events: {listing}", listing)
        self._ctx.ownership = Ownership(owner, record if record is not None else frozenset())
        self._ctx.record = record
        self._arming.leftovers = leftovers

    async def __aenter__(self) -> KeepAliveManager:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, policy: ExitPolicy | None = None) -> list[DeadMansSwitch]:
        """Stop every switch by its exit policy (or by ``policy``, for all), then the scheduler.
        Safe to call again; the first call's ``policy`` holds.

        ``close(ExitPolicy.KEEP)`` hands the switches over: their events stay armed for the next
        process of the same owner to adopt (a rolling deploy without a false "offline").
        Cancels and sends go out as fast as the server's rate limit allows, nearest deadline
        first, and are tried again through 429s (see ``stop_timeout``). Returns the switches
        whose event could not be ended as asked (each also reported, at WARNING): those fire by
        themselves when their delay runs out."""
        self._begin_close(policy)
        assert self._close_task is not None
        return list(await asyncio.shield(self._close_task))

    def close_soon(self, policy: ExitPolicy | None = None) -> None:
        """Begin :meth:`close` from anywhere, a signal handler included; returns at once.

        loop.add_signal_handler(signal.SIGTERM, manager.close_soon)
        """
        loop = self._loop
        if loop is None:  # not started yet: a handler installed on the loop runs inside it
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
        if loop is not None and self._close_task is None:
            loop.call_soon_threadsafe(self._begin_close, policy)

    def _begin_close(self, policy: ExitPolicy | None = None) -> None:
        if self._close_task is None:
            self._close_policy = policy
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

    async def _close(self) -> list[DeadMansSwitch]:
        self.client.remove_sync_observer(self._guard.on_sync)
        self.client.remove_sync_observer(self._fires.on_sync)
        # Switches being added are not added: each cancels what it scheduled before it ends.
        arming = list(self._arming_tasks)
        for task in arming:
            task.cancel()
        await asyncio.gather(*arming, return_exceptions=True)
        self._planner.stop()
        switches = list(self._ctx.switches)
        policy = self._close_policy
        ended = await asyncio.gather(*(self._stopping.stop(s, policy) for s in switches))
        if self._scheduler_task is not None:
            self._scheduler_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler_task
        self._scheduler.cancel_tasks()
        self._ctx.emitter.close_streams()
        return [s.handle for s, done in zip(switches, ended, strict=True) if not done]

    # -- observing -------------------------------------------------------------------------

    @property
    def switches(self) -> list[DeadMansSwitch]:
        """The running switches (not stopped, fired or failed)."""
        return [switch.handle for switch in self._ctx.switches]

    def on_event(self, callback: Callable[[SwitchEvent], None]) -> None:
        """Call ``callback`` (synchronously) with every event of every switch."""
        self._ctx.emitter.callbacks.append(callback)

    def events(self, maxsize: int = 1000) -> EventStream:
        """An async iterator over every event from now on (``async for event in ...``)."""
        return self._ctx.emitter.stream(maxsize)

    def stats(self) -> SwitchStats:
        """Counters summed over the running switches."""
        return sum_stats(self._ctx.switches)

    @property
    def stalls(self) -> int:
        """How often the scheduler woke more than ``stall_threshold`` late."""
        return self._scheduler.stalls

    @property
    def rate_limited(self) -> int:
        """How many of the keep-alive's requests the server answered with 429."""
        budget = self._ctx.budget
        return sum(int(budget.counters(bucket)["rate_limited"] or 0) for bucket in Bucket)

    def capacity(self) -> Capacity:
        """What the request budget can keep: restarts a second planned and needed, the
        switches beyond it, how many switches of a delay fit (``max_switches(delay)``), how long
        arming more takes, and how many events the server would deliver if the bot died now."""
        return self._planner.capacity()

    @property
    def lateness(self) -> collections.deque[float] | None:
        """With ``track_lateness=True``: how late (s) each restart left against its schedule
        (the newest 100,000)."""
        return self._scheduler.lateness

    # -- adding and stopping ---------------------------------------------------------------

    async def add(  # noqa: PLR0913  # the public signature: one keyword per switch option
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
        priority: int = 0,
        sticky_duration: timedelta | int | None = None,
        exact_content: bool = False,
    ) -> DeadMansSwitch:
        """Arm a switch and keep it from firing; returns once it is armed (and "alive" sent).

        ``delay`` (a ``timedelta``, at least 1 s: a shorter one cannot be kept alive over a
        network) is how long after the last restart the server sends the event.
        ``state_key=None`` makes the event a message; a string (``""`` included) a state event.
        ``restart_interval`` (a ``timedelta``, at least 100 ms and below the delay) defaults to a
        third of the delay; if the server allows only a shorter delay than asked, an interval
        not below that is replaced by a third of it (reported as ``DELAY_LOWERED``). A bare
        number is still read as before, with a ``DeprecationWarning``: milliseconds for
        ``delay`` and ``sticky_duration``, seconds for ``restart_interval``.
        ``key`` tells message switches of one type in one room apart. A message switch's content
        carries it under ``org.nio_delayed.switch``, so that a restarted process knows its own
        leftovers even if their text changed (a state event is known by its state key).
        ``on_overwrite`` (state switches): what to do when another user writes the same state,
        seen in the client's sync (see :class:`OverwritePolicy`). In an encrypted room, message
        events are encrypted (``ignore_unverified_devices`` as for nio's ``room_send``).
        ``priority``: when the server's rate limit cannot keep every switch, higher ones are
        kept first (then the ones added first); the others are reported (``OVER_BUDGET``).
        ``sticky_duration`` (message switches, at most one hour): the event is sticky (MSC4354)
        for that long once it fires, however often it is re-armed.
        The content also carries the manager's :attr:`owner` (``org.nio_delayed.owner``): a
        switch adopts or cancels only its own owner's leftovers. ``exact_content=True`` (state
        switches) sends the content exactly as given, without it (MatrixRTC's empty leave
        content, say); the switch's leftovers are then known by its state key, which must hold
        the owner id (a per-device key), or by the manager's record (``record_dir``).
        Raises ``InvalidInput`` for any argument of the wrong type or out of range (nothing is
        sent), :class:`UnsupportedServerError` on a server without delayed events (or without
        sticky events, when asked for), :class:`SwitchArmError` if the event could not be
        scheduled.
        """
        asked, interval = check_switch(
            room_id,
            event_type,
            content,
            delay=delay,
            state_key=state_key,
            restart_interval=restart_interval,
            alive=alive,
            on_exit=on_exit,
            on_lost=on_lost,
            on_leftover=on_leftover,
            on_overwrite=on_overwrite,
            key=key,
            ignore_unverified_devices=ignore_unverified_devices,
            priority=priority,
            sticky_duration=sticky_duration,
            exact_content=exact_content,
        )
        if not self._exact(asked):
            asked = replace(asked, content={**asked.content, OWNER_FIELD: self.owner})
        if self._close_task is not None:
            raise KeepAliveError("this keep-alive manager is closed")
        guarded = self._reserve(
            identity(asked.room_id, asked.event_type, asked.state_key, asked.content)
        )
        try:
            await self.start()
            if asked.sticky_duration_ms is not None:
                await self._require_sticky()
        except BaseException:
            self._reserved.discard(guarded)
            raise
        settings = replace(asked, delay_ms=self._allowed_delay_ms(asked.requested_delay_ms))
        switch = self._new_switch(settings, interval)
        switch.order = self._planner.next_order()
        if self._close_task is not None:  # close() began while the server was asked
            self._reserved.discard(guarded)
            raise KeepAliveError("this keep-alive manager is closed")
        # Armed in a task of the manager's, so that close() can interrupt it; begun before
        # anything else runs, so it has begun by the time close() does.
        arming = asyncio.ensure_future(self._arm(switch))
        self._arming_tasks.add(arming)
        arming.add_done_callback(self._arming_tasks.discard)
        arming.add_done_callback(lambda _: self._reserved.discard(guarded))
        try:
            await asyncio.shield(arming)
        except asyncio.CancelledError:
            # The caller gave up: so does the arming, which cancels what it scheduled; the
            # caller's cancellation waits for that (unless cancelled again: close() still does).
            arming.cancel()
            await asyncio.wait([arming])
            if not arming.cancelled():
                arming.exception()  # retrieved: the caller is told of the cancellation
            raise
        return switch.handle

    def _reserve(self, guarded: Identity) -> Identity:
        """Claim the event for one add() at a time, before it first waits."""
        other = self._ctx.switches.get(guarded)
        if other is not None:
            raise KeepAliveError(f"{other.handle!r} already guards this event")
        if guarded in self._reserved:
            raise KeepAliveError("a switch being added already guards this event")
        self._reserved.add(guarded)
        return guarded

    async def _arm(self, switch: SwitchRuntime) -> None:
        """Arm a switch being added and hand it to the scheduler. Interrupted (its caller was
        cancelled, or the manager closes), it first cancels whatever it scheduled or adopted."""
        closed = KeepAliveError(
            "the keep-alive manager was closed while the switch was added: it was not added, "
            "and its event is cancelled"
        )
        try:
            await self._arming.arm_new(switch)
        except asyncio.CancelledError:
            await self._abandon(switch)
            if self._close_task is not None:
                raise closed from None
            raise
        if self._close_task is not None:  # close() began after the last request
            await self._abandon(switch)
            raise closed
        self._ctx.switches.add(switch)
        self._scheduler.watch_deadline(switch)
        self._scheduler.schedule(switch)

    async def _abandon(self, switch: SwitchRuntime) -> None:
        """Cancel the event of a switch whose add() did not finish (its exit policy is for a
        switch that ran): through the budget, first in line, within ``stop_timeout``. It is
        seen through even if the task is cancelled again meanwhile."""
        if switch.delay_id is None:
            return  # nothing was scheduled
        stopping = asyncio.ensure_future(self._stopping.stop(switch, ExitPolicy.CANCEL))
        while not stopping.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([stopping])

    def _exact(self, asked: SwitchSettings) -> bool:
        """Whether the content goes out exactly as given; refused where the switch could not
        tell its own leftovers then."""
        if not asked.exact_content:
            return False
        owner = self.owner
        if self._record_dir is None and not key_names_owner(asked.state_key, owner):
            raise InvalidInput(
                f"with exact_content, the state key must hold the owner id ({owner!r}), as a "
                "per-device key does, or the manager needs a record_dir: else a restarted "
                "process could not tell its leftover from another device's"
            )
        return True

    async def _require_sticky(self) -> None:
        # Asked before anything is taken or sent: leftovers stay for a switch that can be armed.
        support = await self.client.delayed_events_support()  # cached since start()
        if isinstance(support, DelayedEventsSupportResponse) and not support.sticky:
            raise UnsupportedServerError(
                "the server does not advertise sticky events (MSC4354): nothing was sent"
            )

    def _allowed_delay_ms(self, requested_ms: int) -> int:
        maximum = self._ctx.max_delay_ms
        return requested_ms if maximum is None else min(requested_ms, maximum)

    def _new_switch(self, settings: SwitchSettings, interval: float | None) -> SwitchRuntime:
        delay = settings.delay_ms / 1000
        if interval is None or interval >= delay:
            # The default, or the server lowered the delay below the interval asked for (one
            # below the delay asked for was checked by add()): re-derived, and said below.
            interval = default_interval(delay)
        machine = SwitchMachine(delay, interval, self.backoff, self.rng)
        switch = SwitchRuntime(settings, machine, self.clock, self._stopping.stop)
        if settings.delay_ms < settings.requested_delay_ms:
            self._ctx.emit(
                switch,
                SwitchEventKind.DELAY_LOWERED,
                f"the server allows at most {settings.delay_ms} ms: delay lowered from "
                f"{settings.requested_delay_ms} ms, restart interval {interval:.3g} s",
            )
        return switch

    def resume(self) -> list[DeadMansSwitch]:
        """Resume the switches paused because the server refused the access token (state
        ``UNAUTHORIZED``), once the client has a working one::

            client.access_token = new_token  # or client.restore_login(...), or a new login
            manager.resume()

        Each restarts at once (one whose event was gone re-arms); one whose deadline passed
        while paused verifies as after an outage: a confirmed restart resumes it, an event that
        fired is handled by its ``on_lost`` policy. If the token is still refused they pause
        again after one request. Returns the switches resumed."""
        now = self.clock.now()
        resumed = []
        for switch in self._ctx.switches:
            if switch.machine.resumed(now):
                self._ctx.emit(
                    switch,
                    SwitchEventKind.RESUMED,
                    f"resumed with a new access token: {switch.machine.state.value}, acting now",
                )
                self._scheduler.schedule(switch)
                resumed.append(switch.handle)
        return resumed

    async def stop_switch(self, switch: DeadMansSwitch, policy: ExitPolicy | None = None) -> None:
        """Stop ``switch`` (same as ``await switch.stop(policy)``)."""
        await switch.stop(policy)
