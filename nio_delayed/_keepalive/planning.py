"""Keeping every switch's restarts inside the request budget, and saying, before any deadline,
what the budget cannot keep and what the server could not deliver if the bot died."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import timedelta

from ..validation import seconds_of
from .budget import Bucket
from .capacity import UTILISATION, Need, Plan, deliverable, delivered, plan, safety_margin
from .context import KeepAliveContext
from .switch import DeadMansSwitch, SwitchEventKind, SwitchRuntime

__all__ = ["Capacity", "Planner"]

_FIX = (
    "to keep more: longer delays, a higher rc_delayed_event_mgmt on the server, or an exemption "
    "for the bot (Synapse's per-user rate-limit override), then tell the keep-alive "
    "(ServerLimits)"
)
_DELIVERY_FIX = (
    "fired events count against the account's message rate limit (Synapse: rc_message) and the "
    "ones over it are dropped; to deliver them all: fewer switches per account, longer restart "
    "intervals (their deadlines spread wider), or a higher limit or an exemption for the bot"
)


@dataclass(frozen=True)
class Capacity:
    """What the keep-alive can keep, with the server's rate limits as it knows them now."""

    #: Restarts a second the plan may spend (the management budget less room for look-ups and
    #: stops); ``None``: no known limit.
    restarts_per_second: float | None
    #: Restarts a second every switch needs at least (each at its longest interval: its delay
    #: less a safety margin).
    needed_per_second: float
    #: Restarts a second planned for the switches within the budget.
    planned_per_second: float
    #: How much the restart intervals are stretched to fit (1: not at all).
    stretch: float
    switches: int
    #: The switches beyond the budget, least important last: restarted only with what the
    #: others leave (higher ``priority`` first, then the order they were added, are kept).
    at_risk: tuple[DeadMansSwitch, ...]
    #: If the bot died now: how many of its switches' events the server would deliver.
    deliverable: int
    #: Events a second the scheduling budget allows (``None``: no known limit), and how many
    #: could be scheduled at once right now.
    arming_per_second: float | None
    arming_room: float
    #: Seconds the restarts still wait out a rate-limit hint from the server (0: none).
    hint_wait: float = 0.0

    def max_switches(self, delay: timedelta | float) -> int | None:
        """How many switches of ``delay`` (a ``timedelta``; a bare number is seconds,
        deprecated) the budget keeps in all (``None``: no known limit)."""
        seconds = seconds_of(delay, "delay")
        if self.restarts_per_second is None:
            return None
        return math.floor(self.restarts_per_second * _longest(seconds) + 1e-9)

    def more_switches(self, delay: timedelta | float) -> int | None:
        """How many more switches of ``delay`` (as for :meth:`max_switches`) fit beside the
        ones running."""
        seconds = seconds_of(delay, "delay")
        if self.restarts_per_second is None:
            return None
        spare = self.restarts_per_second - self.needed_per_second
        return max(0, math.floor(spare * _longest(seconds) + 1e-9))

    def arming_time(self, count: int, alive: bool = False) -> float:
        """Seconds to arm ``count`` more switches (twice as many events with an "alive" one).
        A measurement, in float seconds like the other fields."""
        events = count * (2 if alive else 1)
        if self.arming_per_second is None:
            return 0.0
        return max(0.0, events - self.arming_room) / self.arming_per_second


class Planner:
    """Sets each switch's restart interval from the budget's plan (one writer: the machine is
    told), and reports switches going beyond or back within the budget."""

    def __init__(self, context: KeepAliveContext) -> None:
        self._ctx = context
        self._order = itertools.count()
        self._plan: Plan | None = None
        self._said_deliverable: int | None = None
        self._stopped = False

    def next_order(self) -> int:
        return next(self._order)

    def stop(self) -> None:
        """Plan nothing more: the manager is closing, and every switch is being stopped. The
        budget its stops free would otherwise tell the last ones they are back within it."""
        self._stopped = True

    def replan(self) -> None:
        """Plan again: a switch came or went, or the budget learned something."""
        if self._stopped:
            return
        ctx = self._ctx
        rate = ctx.budget.rate(Bucket.MANAGEMENT)
        if rate is None and ctx.budget.rate(Bucket.SCHEDULING) is None:
            self._plan = None  # nothing is limited: every switch keeps what it asked for
            return
        switches = {id(s): s for s in ctx.switches}
        self._plan = plan(
            (_need(s) for s in switches.values()), None if rate is None else rate * UTILISATION
        )
        at_risk = set(self._plan.at_risk)
        for key, switch in switches.items():
            interval = self._plan.intervals.get(key, _need(switch).longest)
            switch.machine.replanned(interval)
            self._mark(switch, key in at_risk, len(switches))
        self._check_delivery(list(switches.values()))

    def _mark(self, switch: SwitchRuntime, over: bool, count: int) -> None:
        if over == switch.over_budget:
            return
        switch.over_budget = over
        assert self._plan is not None
        if over:
            kept = count - len(self._plan.at_risk)
            self._ctx.emit(
                switch,
                SwitchEventKind.OVER_BUDGET,
                f"over budget: the server's rate limit (about {self._plan.available:.3g} restarts "
                f"a second for switches) keeps {kept} of {count} switches; this one (priority "
                f"{switch.settings.priority}) is restarted only with what the others leave and "
                f"may fire; {_FIX}",
            )
        else:
            self._ctx.emit(switch, SwitchEventKind.WITHIN_BUDGET, "back within the budget")

    def _check_delivery(self, switches: list[SwitchRuntime]) -> None:
        """Warn (on the newest switch) when the switches' events could not all be delivered."""
        limit = self._ctx.budget.limit(Bucket.SCHEDULING)
        if limit is None or not switches:
            return
        newest = max(switches, key=lambda s: s.order)
        per_second, burst = limit
        # In the steady state the deadlines spread over one restart interval.
        spread = sum(s.machine.interval for s in switches) / len(switches)
        count = deliverable(len(switches), spread, per_second, burst)
        if count >= len(switches) or count == self._said_deliverable:
            return
        self._said_deliverable = count
        self._ctx.emit(
            newest,
            SwitchEventKind.UNDELIVERABLE,
            f"if the bot died now, about {count} of its {len(switches)} switches' events would "
            f"reach their rooms; {_DELIVERY_FIX}",
        )

    def capacity(self) -> Capacity:
        ctx = self._ctx
        switches = list(ctx.switches)
        rate = ctx.budget.rate(Bucket.MANAGEMENT)
        current = self._plan or plan((_need(s) for s in switches), None)
        now = ctx.clock.now()
        deadlines = [s.machine.deadline - now for s in switches if s.machine.deadline is not None]
        limit = ctx.budget.limit(Bucket.SCHEDULING)
        if limit is None:
            can_deliver = len(deadlines)
        else:
            level = ctx.budget.level(Bucket.SCHEDULING)
            can_deliver = delivered(deadlines, level, limit[0], math.floor(limit[1]))
        arming = ctx.budget.rate(Bucket.SCHEDULING)
        by_key = {id(s): s for s in switches}
        return Capacity(
            restarts_per_second=None if rate is None else rate * UTILISATION,
            needed_per_second=current.needed,
            planned_per_second=current.planned,
            stretch=current.stretch,
            switches=len(switches),
            at_risk=tuple(by_key[k].handle for k in current.at_risk if k in by_key),
            deliverable=can_deliver,
            arming_per_second=arming,
            arming_room=ctx.budget.room(Bucket.SCHEDULING),
            hint_wait=ctx.budget.blocked_for(Bucket.MANAGEMENT),
        )


def _need(switch: SwitchRuntime) -> Need:
    return Need(
        id(switch),
        switch.settings.priority,
        switch.order,
        switch.asked_interval,
        _longest(switch.machine.delay),
    )


def _longest(delay: float) -> float:
    return delay - safety_margin(delay)
