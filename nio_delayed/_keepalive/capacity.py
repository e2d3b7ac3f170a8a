"""Planning restarts inside the management budget, and saying what it can keep. Pure.

Each switch wants a restart every ``interval`` seconds and can go at most ``longest`` seconds
between restarts (its delay less a safety margin) before it risks firing. When the budget cannot
pay for every switch at its interval, intervals stretch, all by one factor, none beyond its
longest. When even that is too much, switches are taken in a fixed order (higher ``priority``
first, then the order they were added) while they fit; the rest are *at risk*: they are
restarted only with what the others leave, and are reported before any deadline passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Need", "Plan", "deliverable", "delivered", "plan", "safety_margin"]

#: Share of the management budget planned for restarts; the rest is room for look-ups, stops
#: and the bot's own calls.
UTILISATION = 0.9
# A switch is restarted at the latest this long before its delay runs out.
MIN_MARGIN = 2.0
MARGIN_SHARE = 0.1


def safety_margin(delay: float) -> float:
    """How long before its deadline a switch must be restarted at the latest: time for a
    retry after one failed attempt (half the delay at most, for very short delays)."""
    return min(max(MIN_MARGIN, MARGIN_SHARE * delay), delay / 2)


@dataclass(frozen=True)
class Need:
    """One switch as the planner sees it."""

    key: int
    priority: int
    order: int
    #: The restart interval asked for (s).
    interval: float
    #: The longest interval that still keeps it: its delay less the safety margin (s).
    longest: float

    @property
    def rank(self) -> tuple[int, int]:
        return (-self.priority, self.order)


@dataclass(frozen=True)
class Plan:
    """Restart intervals for the switches that fit, and the ones at risk (in rank order)."""

    intervals: dict[int, float]
    at_risk: tuple[int, ...]
    #: How much longer than asked the intervals of the switches that fit are (1: not at all).
    stretch: float
    #: Restarts a second needed to keep every switch at its longest interval.
    needed: float
    #: Restarts a second planned for the switches that fit.
    planned: float
    #: Restarts a second the plan may spend (``None``: no known limit).
    available: float | None

    @property
    def over_budget(self) -> bool:
        return bool(self.at_risk)


def plan(needs: Iterable[Need], available: float | None) -> Plan:
    """Fit ``needs`` into ``available`` restarts a second."""
    ranked = sorted(needs, key=lambda n: n.rank)
    needed = sum(1 / n.longest for n in ranked)
    if available is None:
        intervals = {n.key: n.interval for n in ranked}
        return Plan(intervals, (), 1.0, needed, _rate(ranked, intervals), None)
    fit: list[Need] = []
    at_risk: list[int] = []
    spent = 0.0
    for need in ranked:
        # Once one does not fit, neither do the ones after it: the order is the promise.
        if not at_risk and spent + 1 / need.longest <= available * (1 + 1e-9):
            fit.append(need)
            spent += 1 / need.longest
        else:
            at_risk.append(need.key)
    stretch = _stretch(fit, available)
    intervals = {n.key: min(n.interval * stretch, n.longest) for n in fit}
    return Plan(intervals, tuple(at_risk), stretch, needed, _rate(fit, intervals), available)


def _stretch(fit: list[Need], available: float) -> float:
    """The least factor ``s >= 1`` with sum(1 / min(interval * s, longest)) <= available
    (water-filling: switches reach their longest one after another)."""
    if not fit or sum(1 / n.interval for n in fit) <= available:
        return 1.0
    by_cap = sorted(fit, key=lambda n: n.longest / n.interval)
    capped = 0.0  # the rate of the switches already at their longest
    free = sum(1 / n.interval for n in fit)  # the rate of the others, at factor 1
    for i, need in enumerate(by_cap):
        room = available - capped
        if room > 0:
            factor = free / room
            if factor <= need.longest / need.interval:
                return max(1.0, factor)
        capped += 1 / need.longest
        free -= 1 / need.interval
        if i == len(by_cap) - 1:
            break
    return max(n.longest / n.interval for n in fit)


def _rate(needs: Iterable[Need], intervals: dict[int, float]) -> float:
    return sum(1 / intervals[n.key] for n in needs if n.key in intervals)


def delivered(deadlines: Iterable[float], level: float, per_second: float, burst: int) -> int:
    """How many events falling due at ``deadlines`` a leaky bucket lets through (Synapse sends
    fired delayed events through the sender's ``rc_message`` and drops the ones over it).
    ``deadlines`` are seconds from now; ``level`` is the bucket's count now."""
    count, at = 0, 0.0
    for deadline in sorted(deadlines):
        level = max(0.0, level - (deadline - at) * per_second)
        at = deadline
        if level + 1 <= burst:
            level += 1
            count += 1
    return count


def deliverable(events: int, spread: float, per_second: float, burst: float) -> int:
    """How many of ``events`` falling due evenly over ``spread`` seconds a leaky bucket of
    ``per_second`` and ``burst`` lets through: the ones over its limit are dropped (this is what
    Synapse does with delayed events that fire past ``rc_message``)."""
    if events <= 0:
        return 0
    if math.isinf(burst):
        return events
    return min(events, math.floor(burst + per_second * max(0.0, spread)))
