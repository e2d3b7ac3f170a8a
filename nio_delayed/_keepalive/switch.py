"""A dead-man's switch: its settings, its policies, its events, the read-only handle a bot holds
and, apart from it, the engine's mutable side of the switch (:class:`SwitchRuntime`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import Enum
from typing import Any

from ..clock import Clock
from ..delay_id import DelayId
from ..responses import DelayedEventError
from .machine import SwitchMachine, SwitchState, SwitchStats

__all__ = [
    "AliveEvent",
    "DeadMansSwitch",
    "ExitPolicy",
    "KeepAliveError",
    "LeftoverPolicy",
    "LostPolicy",
    "Overwrite",
    "OverwritePolicy",
    "SeenFired",
    "SwitchArmError",
    "SwitchEvent",
    "SwitchEventKind",
    "SwitchRuntime",
    "SwitchSettings",
    "UnsupportedServerError",
]


class ExitPolicy(str, Enum):
    """What stopping a switch does with its event."""

    #: Send it now: the bot is going away, so say so (the default).
    SEND = "send"
    #: Cancel it: a clean exit, nothing to announce.
    CANCEL = "cancel"
    #: Leave it armed: the server sends it when the delay runs out.
    KEEP = "keep"


class LostPolicy(str, Enum):
    """What to do when the server confirms the event is gone while the bot is alive."""

    #: Arm a new one and publish the "alive" event again (the default).
    REARM = "rearm"
    #: Stop the switch in state FIRED.
    STOP = "stop"


class OverwritePolicy(str, Enum):
    """What a state switch does when another user writes its (room, type, state key).

    Synapse cancels a delayed state event when another user writes the same state; the merged
    MSC leaves that rule out, so other servers may keep the event. The manager watches the
    client's sync and applies the chosen policy at once, the same on every server.
    """

    #: Arm a new event and publish the "alive" event again: the bot reasserts its state (the
    #: default, and what Synapse's rule plus ``on_lost=REARM`` would do).
    REARM = "rearm"
    #: Stop the switch (state ``OVERWRITTEN``): its event must not clobber the other user's state.
    #: If the server kept the event, it is cancelled.
    CANCEL = "cancel"
    #: Keep a switch armed, and leave the other user's state alone until it fires: if the server
    #: cancelled the event, a new one is armed without publishing "alive".
    IGNORE = "ignore"


@dataclass(frozen=True)
class Overwrite:
    """Another user's write to a guarded state: who, which event, and when (server ms)."""

    sender: str
    event_id: str | None
    origin_server_ts: int


@dataclass(frozen=True)
class SeenFired:
    """A switch's event as the sync showed it sent: its delay id and the event id it was sent
    as."""

    delay_id: DelayId
    event_id: str | None


class LeftoverPolicy(str, Enum):
    """What to do, at start, with a switch a previous process of the same owner left scheduled
    for the same room, type and state key (for a message: the same key). Events other owners
    armed are never touched."""

    #: Take it over and keep restarting it (the default): no event fires across a restart.
    ADOPT = "adopt"
    #: Cancel it and arm a new one.
    CANCEL = "cancel"


@dataclass(frozen=True)
class AliveEvent:
    """An event published after the switch is armed and after every re-arm, such as a state
    ``{"status": "online"}``. ``state_key=None`` makes it a message."""

    event_type: str
    content: dict[str, Any]
    state_key: str | None = None


class SwitchEventKind(str, Enum):
    """What happened to a switch: the ``kind`` of a :class:`SwitchEvent`."""

    ARMED = "armed"
    ADOPTED = "adopted"
    LEFTOVER_CANCELLED = "leftover_cancelled"
    #: A delayed event on the switch's room, type and state key that another device or program
    #: of the account armed (see ``KeepAliveManager``'s ``owner``): left alone, said at WARNING.
    FOREIGN_LEFTOVER = "foreign_leftover"
    DELAY_LOWERED = "delay_lowered"
    ALIVE_PUBLISHED = "alive_published"
    ALIVE_FAILED = "alive_failed"
    RESTART_FAILED = "restart_failed"
    RATE_LIMITED = "rate_limited"
    AT_RISK = "at_risk"
    RECOVERED = "recovered"
    PROBABLY_FIRED = "probably_fired"
    LOST = "lost"
    #: The switch's own event arrived in the client's sync (its ``unsigned`` delay id says so):
    #: the server sent it, for certain. ``on_lost`` follows (re-arm, or stop in state FIRED).
    #: It replaces ``LOST`` for that event; a server that still answers 200 to restarts of an
    #: event it sent is caught this way too.
    FIRED_CONFIRMED = "fired_confirmed"
    REARMED = "rearmed"
    OVERWRITTEN = "overwritten"
    STALL = "stall"
    #: The switches outgrew what the server's rate limit can keep: this one is beyond the
    #: budget (see ``KeepAliveManager.capacity()``), said before its first deadline.
    OVER_BUDGET = "over_budget"
    #: Back within the budget (a switch ahead of it stopped, or the budget grew).
    WITHIN_BUDGET = "within_budget"
    #: If the bot died now, the server could not deliver every switch's event: fired events go
    #: through the account's message rate limit, and the ones over it are dropped.
    UNDELIVERABLE = "undeliverable"
    #: The server refused the access token (401 ``M_UNKNOWN_TOKEN``, ``soft_logout`` on the
    #: error): every switch is paused until the client has a new token and
    #: ``KeepAliveManager.resume()`` is called.
    UNAUTHORIZED = "unauthorized"
    #: Resumed after a new access token: it restarts (or re-arms) at once.
    RESUMED = "resumed"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class SwitchEvent:
    """Something that happened to a switch. ``at`` is on the keep-alive clock (seconds)."""

    kind: SwitchEventKind
    switch: DeadMansSwitch
    state: SwitchState
    message: str
    at: float
    error: DelayedEventError | None = None


class KeepAliveError(Exception):
    """A keep-alive could not do what was asked. ``error`` is the server's answer, if any."""

    def __init__(self, message: str, error: DelayedEventError | None = None) -> None:
        super().__init__(message)
        self.error = error


class UnsupportedServerError(KeepAliveError):
    """The server does not offer delayed events (or sticky ones, when asked): nothing was
    sent."""


class SwitchArmError(KeepAliveError):
    """The switch's event could not be scheduled."""


@dataclass(frozen=True)
class SwitchSettings:
    """What a switch was asked to do; fixed once it is added."""

    room_id: str
    event_type: str
    content: dict[str, Any]
    state_key: str | None
    requested_delay_ms: int
    delay_ms: int
    alive: AliveEvent | None
    on_exit: ExitPolicy
    on_lost: LostPolicy
    on_leftover: LeftoverPolicy
    on_overwrite: OverwritePolicy
    ignore_unverified_devices: bool
    #: Higher is kept first when the budget cannot keep every switch.
    priority: int = 0
    #: A message switch's event is sticky this long once sent (MSC4354); every arming asks it.
    sticky_duration_ms: int | None = None
    #: The content goes out exactly as given, without the owner marker (state switches).
    exact_content: bool = False


Stopper = Callable[["SwitchRuntime", "ExitPolicy | None"], Awaitable[bool]]


class SwitchRuntime:
    """The keep-alive's side of one switch: its settings, its state machine and the scratch of the
    requests made for it. The keep-alive owns it; a bot holds its read-only :attr:`handle`."""

    def __init__(
        self, settings: SwitchSettings, machine: SwitchMachine, clock: Clock, stopper: Stopper
    ) -> None:
        self.settings = settings
        self.machine = machine
        self.clock = clock
        self.delay_id: DelayId | None = None
        self.alive_pending = False
        #: Clear while a request for this switch is under way.
        self.idle = asyncio.Event()
        self.idle.set()
        #: Bumped at every (re)scheduling: older entries of the due heap are stale.
        self.generation = 0
        self.watched_deadline: float | None = None
        self.tx_id: str | None = None
        self.stop_task: asyncio.Future[bool] | None = None
        #: Wall-clock ms when the current event was scheduled (or adopted): a state write by
        #: another user from before then is not an overwrite of it.
        self.armed_wall_ms = 0
        #: An overwrite seen in the sync and not handled yet, and the event id of the last one.
        self.overwrite: Overwrite | None = None
        self.last_overwrite_id: str | None = None
        #: The sync showed this event sent, and the fire is not handled yet.
        self.seen_fired: SeenFired | None = None
        #: The next re-arm publishes no "alive" (``on_overwrite=IGNORE``).
        self.rearm_quietly = False
        self.callbacks: list[Callable[[SwitchEvent], None]] = []
        #: The scheduler's request task for it, and whether that task waits for the budget
        #: (a stop then cancels it rather than wait its turn).
        self.act_task: asyncio.Task[None] | None = None
        self.waiting_for_budget = False
        #: Beyond what the budget can keep (see the capacity plan): restarted with what the
        #: others leave.
        self.over_budget = False
        #: The restart interval asked for (the plan may stretch it), and the order it was added.
        self.asked_interval = machine.interval
        self.order = 0
        self._changed = asyncio.Event()
        self._stopper = stopper
        self.handle = DeadMansSwitch(self)

    @property
    def busy(self) -> bool:
        return not self.idle.is_set()

    def state_changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        """Wait for the next event of this switch."""
        await self._changed.wait()

    async def stop(self, policy: ExitPolicy | None) -> bool:
        return await self._stopper(self, policy)


class DeadMansSwitch:
    """One switch, created by :meth:`KeepAliveManager.add`. Read its ``state`` and ``stats``;
    ``await stop()`` to end it by its exit policy."""

    def __init__(self, runtime: SwitchRuntime) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._machine = runtime.machine

    # -- what it is ------------------------------------------------------------------------

    @property
    def room_id(self) -> str:
        return self._settings.room_id

    @property
    def event_type(self) -> str:
        return self._settings.event_type

    @property
    def content(self) -> dict[str, Any]:
        return self._settings.content

    @property
    def state_key(self) -> str | None:
        return self._settings.state_key

    @property
    def delay(self) -> timedelta:
        """The effective delay: the requested one, lowered to the server's maximum if needed."""
        return timedelta(milliseconds=self._settings.delay_ms)

    @property
    def delay_ms(self) -> int:
        return self._settings.delay_ms

    @property
    def requested_delay(self) -> timedelta:
        return timedelta(milliseconds=self._settings.requested_delay_ms)

    @property
    def restart_interval(self) -> timedelta:
        return timedelta(seconds=self._machine.interval)

    @property
    def alive(self) -> AliveEvent | None:
        return self._settings.alive

    @property
    def on_exit(self) -> ExitPolicy:
        return self._settings.on_exit

    @property
    def on_lost(self) -> LostPolicy:
        return self._settings.on_lost

    @property
    def on_leftover(self) -> LeftoverPolicy:
        return self._settings.on_leftover

    @property
    def on_overwrite(self) -> OverwritePolicy:
        return self._settings.on_overwrite

    @property
    def ignore_unverified_devices(self) -> bool:
        return self._settings.ignore_unverified_devices

    @property
    def exact_content(self) -> bool:
        """The event's content is exactly the one given: it carries no owner marker."""
        return self._settings.exact_content

    @property
    def priority(self) -> int:
        """Higher is kept first when the server's rate limit cannot keep every switch."""
        return self._settings.priority

    @property
    def over_budget(self) -> bool:
        """Beyond what the budget can keep: restarted only with what the others leave (see
        ``KeepAliveManager.capacity()``)."""
        return self._runtime.over_budget

    # -- how it is doing -------------------------------------------------------------------

    @property
    def delay_id(self) -> DelayId | None:
        """The id of the event the switch keeps from firing now (a new one after a re-arm)."""
        return self._runtime.delay_id

    @property
    def state(self) -> SwitchState:
        return self._machine.state

    @property
    def stats(self) -> SwitchStats:
        return replace(self._machine.stats)

    @property
    def deadline_in(self) -> float | None:
        """Seconds until the server is predicted to send the event, if it is armed."""
        if self._machine.deadline is None:
            return None
        return self._machine.deadline - self._runtime.clock.now()

    @property
    def busy(self) -> bool:
        """True while a request for this switch is under way."""
        return self._runtime.busy

    def on_event(self, callback: Callable[[SwitchEvent], None]) -> None:
        """Call ``callback`` (synchronously) with every event of this switch."""
        self._runtime.callbacks.append(callback)

    async def wait_for(self, *states: SwitchState, timeout: float | None = None) -> SwitchState:
        """Wait until the switch is in one of ``states``; returns it."""

        async def wait() -> SwitchState:
            while self.state not in states:
                await self._runtime.changed()
            return self.state

        return await asyncio.wait_for(wait(), timeout)

    async def stop(self, policy: ExitPolicy | None = None) -> bool:
        """Stop restarting and end the event by ``policy`` (default: the switch's ``on_exit``).
        Under a rate limit it keeps trying, in turn with the other switches' stops, while the
        event can still be ended (see ``stop_timeout``). Returns False if the event could not be
        cancelled or sent (a STOPPED event with the error says so, logged at WARNING): it then
        fires by itself when its delay runs out. Safe to call more than once and from several
        tasks."""
        return await self._runtime.stop(policy)

    def __repr__(self) -> str:
        key = "" if self.state_key is None else f", state_key={self.state_key!r}"
        delay_id = self.delay_id
        short = f", delay_id={delay_id.short}" if delay_id else ""
        return (
            f"DeadMansSwitch({self.room_id}, {self.event_type}{key}, "
            f"delay={self._settings.delay_ms} ms, state={self.state.value}{short})"
        )
