"""Prometheus metrics of a keep-alive manager (``pip install nio-delayed[metrics]``)::

    from prometheus_client import start_http_server
    from nio_delayed.metrics import register

    register(client.keep_alive)  # in the bot's event loop, before or after adding switches
    start_http_server(9464, addr="127.0.0.1")

A :class:`KeepAliveCollector` reads the manager's public state when it is scraped: the
restarts themselves cost nothing more. All it keeps between scrapes is what the manager forgets:
counts of the switch events and of their errors by kind (a callback the manager calls on every
event, which are rare next to restarts) and the counters of switches that ended, so that its
counters never go down.

The metric names, their labels and their meaning are a stable contract (docs/operators.md,
"Metrics").
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.registry import REGISTRY, CollectorRegistry
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "nio_delayed.metrics needs prometheus-client: pip install 'nio-delayed[metrics]'"
    ) from exc

from . import (
    DeadMansSwitch,
    DelayedEventError,
    KeepAliveManager,
    SwitchEvent,
    SwitchState,
    SwitchStats,
)
from .wire import switch_key

__all__ = [
    "FIRE_KINDS",
    "PREFIX",
    "KeepAliveCollector",
    "Snapshot",
    "SwitchRow",
    "aiohttp_handler",
    "register",
]

#: The prefix of every metric name (``nio_delayed_switches``, ...).
PREFIX = "nio_delayed"
#: The switch event kinds that say a switch's event is gone while the bot ran: confirmed gone by
#: a restart's answer, or seen sent in the sync (that one replaces the loss: never counted twice).
#: A ``probably_fired`` guess is left out: it is followed by one of these, or by a recovery.
FIRE_KINDS = frozenset({"lost", "fired_confirmed"})
#: How long a scrape from another thread waits for the event loop to read the manager (s).
READ_TIMEOUT = 5.0


@dataclass(frozen=True)
class Snapshot:
    """What the manager looked like at one moment: every metric is made from one of these."""

    #: Running switches by state (every state a running switch can be in, zeros included).
    states: dict[str, int]
    #: Counters over every switch the manager has run (ended ones included).
    stats: SwitchStats
    #: Switch events by kind (``SwitchEventKind`` values), since the collector was registered.
    events: dict[str, int]
    #: Failed requests for switches by error kind (``ErrorKind`` values), each failure once.
    errors: dict[str, int]
    #: Keep-alive requests answered with 429 (the manager's ``rate_limited``).
    rate_limited: int
    #: Late wake-ups of the scheduler (the manager's ``stalls``).
    stalls: int
    #: Switches beyond what the rate limit can keep (``capacity().at_risk``).
    over_budget: int
    #: The rest are the manager's :class:`~nio_delayed.Capacity`: how many switches' events the
    #: server would deliver if the bot died now.
    deliverable: int
    #: Restarts a second the rate limit leaves for switches (``None``: no known limit).
    restarts_per_second: float | None
    #: Restarts a second the running switches need at least.
    needed_per_second: float
    #: Restarts a second planned.
    planned_per_second: float
    #: How much the restart intervals are stretched to fit (1: not at all).
    stretch: float
    #: Events a second the scheduling limit allows (``None``: no known limit).
    arming_per_second: float | None
    #: Seconds the restarts still wait out a rate-limit hint from the server.
    hint_wait: float
    #: Seconds to the nearest predicted deadline of a running switch.
    next_deadline: float | None = None
    #: With ``per_switch``: each running switch (its labels, state and deadline).
    switches: tuple[SwitchRow, ...] = ()


@dataclass(frozen=True)
class SwitchRow:
    """One running switch, as the per-switch metrics show it."""

    #: The room of the switch's event.
    room_id: str
    #: The type of the switch's event.
    event_type: str
    #: The state key of a state switch, the ``key`` of a message switch.
    switch_key: str
    #: Its ``SwitchState`` value.
    state: str
    #: Seconds to its predicted deadline (``None``: not armed).
    deadline: float | None

    @classmethod
    def of(cls, switch: DeadMansSwitch) -> SwitchRow:
        """The row of ``switch`` now."""
        key = switch_key(switch.state_key, switch.content) or ""
        return cls(switch.room_id, switch.event_type, key, switch.state.value, switch.deadline_in)


class KeepAliveCollector:
    """A Prometheus collector for one :class:`~nio_delayed.KeepAliveManager`.

    ``per_switch`` adds a state and a deadline series for each running switch, labelled with
    its room, event type and key: one series each per switch, so leave it off for thousands.

    Create it (or :func:`register` it) in the manager's event loop, or before it runs: the loop is
    then the one its first switch event comes from. A scrape from another thread
    (``start_http_server``) asks that loop for the figures and waits up to ``READ_TIMEOUT``: the
    manager is only ever read from its own loop.
    """

    def __init__(self, manager: KeepAliveManager, *, per_switch: bool = False) -> None:
        self._manager = manager
        self._per_switch = per_switch
        # The loop that owns the manager; created outside one, the first event tells it.
        self._loop = _running_loop()
        self._events: collections.Counter[str] = collections.Counter()
        self._errors: collections.Counter[str] = collections.Counter()
        self._ended = SwitchStats()
        self._counted: weakref.WeakSet[DeadMansSwitch] = weakref.WeakSet()
        self._last_error: weakref.WeakKeyDictionary[DeadMansSwitch, DelayedEventError] = (
            weakref.WeakKeyDictionary()
        )
        manager.on_event(self._on_event)

    def _on_event(self, event: SwitchEvent) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._events[event.kind.value] += 1
        error = event.error
        if error is not None and self._last_error.get(event.switch) is not error:
            # One failure may be told by several events (RESTART_FAILED, AT_RISK...): once here.
            self._last_error[event.switch] = error
            self._errors[error.kind.value] += 1
        if event.state.is_final and event.switch not in self._counted:
            # It leaves the manager's list: keep its counters in the totals.
            self._counted.add(event.switch)
            self._ended.add(event.switch.stats)

    def snapshot(self) -> Snapshot:
        """The manager's figures now; call it in the manager's event loop (or with none)."""
        manager = self._manager
        switches = manager.switches
        capacity = manager.capacity()
        states = {s.value: 0 for s in SwitchState if not s.is_final}
        stats = SwitchStats()
        stats.add(self._ended)
        deadlines = []
        for switch in switches:
            states[switch.state.value] = states.get(switch.state.value, 0) + 1
            if switch not in self._counted:
                stats.add(switch.stats)
            if switch.deadline_in is not None:
                deadlines.append(switch.deadline_in)
        return Snapshot(
            states=states,
            stats=stats,
            events=dict(self._events),
            errors=dict(self._errors),
            rate_limited=manager.rate_limited,
            stalls=manager.stalls,
            over_budget=len(capacity.at_risk),
            deliverable=capacity.deliverable,
            restarts_per_second=capacity.restarts_per_second,
            needed_per_second=capacity.needed_per_second,
            planned_per_second=capacity.planned_per_second,
            stretch=capacity.stretch,
            arming_per_second=capacity.arming_per_second,
            hint_wait=capacity.hint_wait,
            next_deadline=min(deadlines, default=None),
            switches=tuple(SwitchRow.of(s) for s in switches) if self._per_switch else (),
        )

    def _read(self) -> Snapshot:
        loop = self._loop
        if loop is None or not loop.is_running() or _running_loop() is loop:
            return self.snapshot()

        async def read() -> Snapshot:
            return self.snapshot()

        future = asyncio.run_coroutine_threadsafe(read(), loop)
        try:
            return future.result(READ_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()  # the loop is blocked: this scrape fails, the next one tries again
            raise

    def collect(self) -> Iterable[Metric]:
        """Every metric family, from a :meth:`snapshot` read in the manager's loop (the
        registry calls it on each scrape)."""
        return _families(self._read())

    def describe(self) -> Iterable[Metric]:
        """What the registry checks for duplicates when this collector is registered (a
        second manager's collector in the same registry is refused)."""
        return self.collect()


def _families(s: Snapshot) -> list[Metric]:
    """The metric families of a snapshot: the exporter's contract."""
    found: list[Metric] = []

    def add(
        kind: type[GaugeMetricFamily | CounterMetricFamily],
        name: str,
        documentation: str,
        value: float | None = None,
        by: tuple[str, dict[str, int]] | None = None,
    ) -> None:
        """One family: a single ``value`` (none: the metric is absent), or one sample per
        label value of ``by`` (label name, {label value: sample})."""
        if by is not None:
            label, samples = by
            family = kind(f"{PREFIX}_{name}", documentation, labels=[label])
            for label_value, sample in sorted(samples.items()):
                family.add_metric([label_value], sample)
            found.append(family)
        elif value is not None:
            found.append(kind(f"{PREFIX}_{name}", documentation, value=value))

    gauge, counter = GaugeMetricFamily, CounterMetricFamily
    stats = s.stats
    add(gauge, "switches", "Running dead-man's switches by state.", by=("state", s.states))
    add(
        gauge,
        "switches_over_budget",
        "Switches beyond what the server's rate limit can keep restarted.",
        s.over_budget,
    )
    add(
        gauge,
        "switches_deliverable",
        "How many running switches' events the server would deliver if the bot died now.",
        s.deliverable,
    )
    restarts = {"ok": stats.restarts_ok, "failed": stats.restarts_failed}
    add(counter, "restarts", "Restarts of switch events, by result.", by=("result", restarts))
    add(counter, "restart_retries", "Restart attempts made after a failure.", stats.retries)
    add(counter, "rearms", "New events armed after a switch's event was lost.", stats.rearms)
    add(
        counter,
        "events_lost",
        "Switch events the server confirmed gone while their switch was running.",
        stats.losses,
    )
    add(
        counter,
        "fires_seen",
        "Of the lost events, the ones seen sent in the bot's sync: fires known for certain.",
        stats.fires_seen,
    )
    add(
        counter,
        "rate_limited_requests",
        "Keep-alive requests the server answered with 429.",
        s.rate_limited,
    )
    add(
        counter,
        "scheduler_stalls",
        "Times the scheduler woke late (a blocked event loop or a suspended host).",
        s.stalls,
    )
    add(
        counter,
        "switch_events",
        "Switch events by kind (SwitchEventKind values), since the exporter was registered.",
        by=("kind", s.events),
    )
    add(
        counter,
        "switch_errors",
        "Failed requests for switches, by error kind (ErrorKind values).",
        by=("kind", s.errors),
    )
    add(
        gauge,
        "restart_capacity_per_second",
        "Restarts a second the rate limit leaves for switches (absent: no known limit).",
        s.restarts_per_second,
    )
    add(
        gauge,
        "restart_needed_per_second",
        "Restarts a second the running switches need at least.",
        s.needed_per_second,
    )
    add(
        gauge,
        "restart_planned_per_second",
        "Restarts a second planned for the switches within the budget.",
        s.planned_per_second,
    )
    add(
        gauge,
        "restart_interval_stretch_ratio",
        "How much restart intervals are stretched to fit the budget (1: not at all).",
        s.stretch,
    )
    add(
        gauge,
        "arming_capacity_per_second",
        "Events a second the scheduling rate limit allows (absent: no known limit).",
        s.arming_per_second,
    )
    add(
        gauge,
        "rate_limit_hint_wait_seconds",
        "Seconds the restarts still wait out a rate-limit hint from the server.",
        s.hint_wait,
    )
    add(
        gauge,
        "next_deadline_seconds",
        "Seconds to the nearest predicted deadline of a running switch (absent: none armed).",
        s.next_deadline,
    )
    add(
        gauge,
        "restart_margin_min_seconds",
        "The least time left before a deadline when a restart was confirmed (absent: none yet).",
        stats.min_margin,
    )
    if s.switches:
        _add_switch_rows(found, s.switches)
    return found


def _add_switch_rows(found: list[Metric], rows: tuple[SwitchRow, ...]) -> None:
    labels = ["room_id", "event_type", "switch_key"]
    state = GaugeMetricFamily(
        f"{PREFIX}_switch_state",
        "Each running switch's state (1 for its current state).",
        labels=[*labels, "state"],
    )
    deadline = GaugeMetricFamily(
        f"{PREFIX}_switch_deadline_seconds",
        "Seconds to each armed switch's predicted deadline.",
        labels=labels,
    )
    for row in rows:
        names = [row.room_id, row.event_type, row.switch_key]
        state.add_metric([*names, row.state], 1)
        if row.deadline is not None:
            deadline.add_metric(names, row.deadline)
    found += [state, deadline]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def register(
    manager: KeepAliveManager, registry: CollectorRegistry = REGISTRY, *, per_switch: bool = False
) -> KeepAliveCollector:
    """Register a :class:`KeepAliveCollector` for ``manager`` (one per registry: the metric
    names are the same for every manager) and return it."""
    collector = KeepAliveCollector(manager, per_switch=per_switch)
    registry.register(collector)
    return collector


def aiohttp_handler(
    registry: CollectorRegistry = REGISTRY,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler serving ``registry`` in the format the scraper asks for, for a bot
    that already runs an aiohttp server: ``app.router.add_get("/metrics", aiohttp_handler())``.
    It runs in the bot's event loop, so a scrape reads the manager directly."""

    async def metrics(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(registry), headers={"Content-Type": content_type})

    return metrics
