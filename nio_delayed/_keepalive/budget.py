"""The server's rate limits as the keep-alive models them: one budget a client, two buckets.

Synapse limits a user's delayed-event *management* (restart, cancel, send, look-up, list:
``rc_delayed_event_mgmt``, 1/s with a burst of 5 by default) apart from *scheduling* (arming an
event, and every ordinary event the bot sends, "alive" events included: ``rc_message``, 0.2/s
with a burst of 10). Both are leaky buckets: a request is refused (429, with the time until one
more would pass) when it would take the bucket over its burst; refused requests cost nothing.

The budget keeps a model of each bucket and hands out the right to send a request in priority
order (the request whose deadline is nearest first), no faster than the model allows. It learns
from what the server answers:

- a 429 the model did not expect (a *surprise*) is honoured for its hint, and only for its
  bucket; one alone changes nothing else (an unlucky 429: another device, a proxy). Refusals in
  a row, and refusals of requests sent before the last one was heard of, are one surprise: they
  say nothing new about the pace;
- several surprises among the recent requests mean the model is too generous: its rate and burst
  shrink (multiplicatively), then grow back slowly while requests succeed, never above the
  configured limit nor, for a while, to the rate that was just refused;
- told that a bucket has no limit, the budget believes it: it waits out hints, learns nothing;
- a hint is a time to wait, never a pace to keep; and a hint longer than a switch can wait does
  not silence it: a request that would otherwise miss its deadline may go as a probe, one per
  probe gap, and a probe that succeeds ends the wait.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum

from ..clock import Clock, TimerHandle
from ..limits import RateLimit, ServerLimits

__all__ = ["Bucket", "Grant", "Priority", "RequestBudget"]


class Bucket(str, Enum):
    """What the server limits together."""

    #: Restart, cancel, send now, look-up, listing (Synapse: ``rc_delayed_event_mgmt``).
    MANAGEMENT = "management"
    #: Scheduling an event, and ordinary events such as "alive" (Synapse: ``rc_message``).
    SCHEDULING = "scheduling"


class Priority(IntEnum):
    """Who goes first when a bucket is short (lower first; ties: nearest deadline first)."""

    #: Cancelling or sending an event when a switch stops: the bot is going away.
    STOP = 0
    #: Restarting (or checking on) a switch the budget can keep.
    KEEP = 1
    #: Arming a new event (at ``add()``, or after one was lost).
    ARM = 2
    #: Publishing an "alive" event.
    ALIVE = 3
    #: Restarting a switch beyond the budget: only what the others leave.
    AT_RISK = 4


# Requests leave a little slower than the modelled rate, and one token of the burst stays
# unused: the server counts a request when it arrives, and arrival times jitter.
PACE = 0.97
SLACK = 1.0
# Surprises among this many recent requests, and how many of them, mean "too fast".
WINDOW = 20
SURPRISES_TO_SLOW = 3
# A refused rate shrinks by this factor; after this many requests in a row without a refusal
# it grows by GROWTH of the configured rate.
SHRINK = 0.75
CLEAN_TO_GROW = 40
GROWTH = 0.05
# For this long after a shrink the rate stays under the one that was refused.
CEILING_MEMORY = 600.0
# The slowest a bucket is ever modelled (one request every 100 s would keep nothing alive).
MIN_RATE = 0.01
# Times closer than this are the same time (float rounding must not leave a token unused).
EPSILON = 1e-6
# Probes past a long hint: at most one per this many seconds (or per token, if slower).
PROBE_GAP = 1.0


@dataclass
class Grant:
    """The right to send one request, and what the model expected of it."""

    bucket: Bucket
    at: float
    #: Sent against a hint (a probe): a 429 is no surprise then.
    probe: bool = False


@dataclass(order=True)
class _Waiter:
    priority: int
    deadline: float
    seq: int
    latest: float
    future: asyncio.Future[Grant]


class _Model:
    """One bucket of the server as the client believes it is: a leaky bucket, learned."""

    def __init__(self, bucket: Bucket, prior: RateLimit | None) -> None:
        self.bucket = bucket
        self.prior = prior
        self.rate: float | None = None if prior is None else prior.per_second
        self.burst: float = math.inf if prior is None else float(prior.burst)
        self.level = 0.0
        self.level_at = 0.0
        #: Until when the server's last hint asks us to wait.
        self.blocked_until = 0.0
        #: The rate and burst last refused, and when: not grown back to for a while.
        self.ceiling: tuple[float, float] | None = None
        self.ceiling_at = 0.0
        self.recent: collections.deque[bool] = collections.deque(maxlen=WINDOW)
        self.clean = 0
        #: When the last refusal was heard of, and whether no success came since.
        self.refused_at = -math.inf
        self.refusing = False
        self.last_probe = -math.inf
        self.sent = 0
        self.succeeded = 0
        self.rate_limited = 0
        self.surprises = 0
        self.shrinks = 0

    def level_now(self, now: float) -> float:
        if self.rate is None or now <= self.level_at:
            return self.level
        # Drained a little slower than the server drains it: requests leave at PACE of the rate.
        return max(0.0, self.level - (now - self.level_at) * self.rate * PACE)

    def paced_at(self, now: float) -> float:
        """When the model lets the next request leave (hints aside)."""
        if self.rate is None:
            return now
        room = max(1.0, self.burst - SLACK) - 1
        over = self.level_now(now) - room
        return now if over <= 0 else max(now, self.level_at) + over / (self.rate * PACE)

    def ready_at(self, now: float) -> float:
        return max(self.paced_at(now), self.blocked_until)

    def take(self, now: float) -> None:
        self.sent += 1
        if self.rate is not None:
            self.level = self.level_now(now) + 1
            self.level_at = max(now, self.level_at)

    def hint_disproved(self, now: float) -> None:
        """A probe sent against a hint passed: the server has room after all."""
        self.blocked_until = 0.0
        if self.rate is not None:
            self.level, self.level_at = max(1.0, self.burst - SLACK), now

    def ok(self, now: float) -> None:
        """A request succeeded."""
        self.succeeded += 1
        self.recent.append(False)
        self.refusing = False
        if now >= self.blocked_until:
            self.blocked_until = 0.0
        self.clean += 1
        if self.clean >= CLEAN_TO_GROW:
            self.clean = 0
            self._grow(now)

    def _grow(self, now: float) -> None:
        if self.rate is None or self.prior is None:
            return
        top, top_burst = self.prior.per_second, float(self.prior.burst)
        if self.ceiling is not None and now - self.ceiling_at < CEILING_MEMORY:
            top = min(top, self.ceiling[0] * 0.95)
            top_burst = min(top_burst, max(1.0, self.ceiling[1] - 1))
        self.rate = min(top, max(self.rate, self.rate + GROWTH * self.prior.per_second))
        self.burst = max(self.burst, min(top_burst, self.burst + 1))

    def refused(self, now: float, hint: float, sent_at: float, probe: bool) -> None:
        """A 429 with ``hint`` seconds to wait (already bounded by the caller) for a request
        sent at ``sent_at``."""
        self.rate_limited += 1
        self.clean = 0
        # A request the model let go was refused: the model is off (or the server unlucky).
        if not probe and not self.refusing and sent_at > self.refused_at:
            # A request the model let go was refused: the model is off (or the server unlucky).
            self.surprises += 1
            self.recent.append(True)
            if self.rate is not None and sum(self.recent) >= SURPRISES_TO_SLOW:
                self._shrink(now, self.rate)
        self.refusing = True
        self.refused_at = now
        self.blocked_until = max(self.blocked_until, now + hint)
        # When the hint has passed, the server has room for exactly one more.
        if self.rate is not None:
            self.level = max(1.0, self.burst - SLACK) - 1
            self.level_at = self.blocked_until

    def _shrink(self, now: float, rate: float) -> None:
        self.shrinks += 1
        self.recent.clear()
        self.ceiling, self.ceiling_at = (rate, self.burst), now
        self.rate = max(MIN_RATE, rate * SHRINK)
        self.burst = max(1.0, math.floor(self.burst * SHRINK))


class RequestBudget:
    """Tokens for the requests of one client's keep-alive, per :class:`Bucket`.

    ``await acquire(bucket, priority, deadline, latest)`` waits for the right to send; the
    caller then reports the outcome with :meth:`succeeded` or :meth:`rate_limited`. ``deadline``
    orders requests of one priority; ``latest`` is the last moment the request is still useful,
    after which a long hint no longer holds it back (it goes as a probe).
    """

    def __init__(self, clock: Clock, limits: ServerLimits, *, max_hint: float = 300.0) -> None:
        priors = {Bucket.MANAGEMENT: limits.management, Bucket.SCHEDULING: limits.scheduling}
        self._clock = clock
        self._models = {bucket: _Model(bucket, priors[bucket]) for bucket in Bucket}
        self._waiters: dict[Bucket, list[_Waiter]] = {bucket: [] for bucket in Bucket}
        self._timers: dict[Bucket, TimerHandle | None] = dict.fromkeys(Bucket)
        self._seq = itertools.count()
        self._max_hint = max_hint
        #: Called when the model of a bucket changes (learned), so plans can follow.
        self.on_change: Callable[[Bucket], None] | None = None

    # -- what the model says --------------------------------------------------------------

    def rate(self, bucket: Bucket) -> float | None:
        """Requests a second the model sustains (``None``: no known limit)."""
        rate = self._models[bucket].rate
        return None if rate is None else rate * PACE

    def limit(self, bucket: Bucket) -> tuple[float, float] | None:
        """The server's limit as the model now believes it: (per second, burst)."""
        model = self._models[bucket]
        return None if model.rate is None else (model.rate, model.burst)

    def level(self, bucket: Bucket) -> float:
        """How full the server's bucket is believed to be now (requests counted)."""
        return self._models[bucket].level_now(self._clock.now())

    def room(self, bucket: Bucket) -> float:
        """How many requests could leave at once right now (``inf``: no known limit)."""
        model = self._models[bucket]
        if model.rate is None:
            return math.inf
        return max(0.0, max(1.0, model.burst - SLACK) - model.level_now(self._clock.now()))

    def blocked_for(self, bucket: Bucket) -> float:
        """Seconds left of the server's last hint for ``bucket``."""
        return max(0.0, self._models[bucket].blocked_until - self._clock.now())

    def counters(self, bucket: Bucket) -> dict[str, float | int | None]:
        model = self._models[bucket]
        return {
            "rate": self.rate(bucket),
            "burst": None if model.rate is None else model.burst,
            "sent": model.sent,
            "succeeded": model.succeeded,
            "rate_limited": model.rate_limited,
            "surprises": model.surprises,
            "shrinks": model.shrinks,
            "waiting": sum(1 for w in self._waiters[bucket] if not w.future.done()),
        }

    # -- handing out tokens ---------------------------------------------------------------

    async def acquire(
        self,
        bucket: Bucket,
        priority: Priority,
        deadline: float | None = None,
        latest: float | None = None,
    ) -> Grant:
        """Wait for the right to send one request on ``bucket``."""
        granted = self.try_acquire(bucket)
        if granted is not None:
            return granted
        waiter = _Waiter(
            int(priority),
            math.inf if deadline is None else deadline,
            next(self._seq),
            math.inf if latest is None else latest,
            asyncio.get_running_loop().create_future(),
        )
        heapq.heappush(self._waiters[bucket], waiter)
        self._pump(bucket)
        try:
            return await waiter.future
        finally:
            # A waiter cancelled while queued leaves: the next one may be able to go now.
            if waiter.future.cancelled():
                self._pump(bucket)

    def try_acquire(self, bucket: Bucket) -> Grant | None:
        """The right to send one request now, if the bucket has room and nobody waits."""
        now = self._clock.now()
        model = self._models[bucket]
        if self._pending(bucket) or model.ready_at(now) > now + EPSILON:
            return None
        model.take(now)
        return Grant(bucket, now)

    def _pending(self, bucket: Bucket) -> bool:
        waiters = self._waiters[bucket]
        while waiters and waiters[0].future.done():
            heapq.heappop(waiters)
        return bool(waiters)

    def _pump(self, bucket: Bucket) -> None:
        """Grant what may go now; set a timer for the next moment something may."""
        timer = self._timers[bucket]
        if timer is not None:
            timer.cancel()
            self._timers[bucket] = None
        model = self._models[bucket]
        waiters = self._waiters[bucket]
        while self._pending(bucket):
            now = self._clock.now()
            if model.ready_at(now) <= now + EPSILON:
                self._grant(heapq.heappop(waiters), model, now, probe=False)
                continue
            probe = self._probe_candidate(bucket, now)
            if probe is not None:
                waiters.remove(probe)
                heapq.heapify(waiters)
                model.last_probe = now
                self._grant(probe, model, now, probe=True)
                continue
            wake = self._next_moment(bucket, now)
            self._timers[bucket] = self._clock.call_later(wake - now, lambda: self._pump(bucket))
            return

    def _grant(self, waiter: _Waiter, model: _Model, now: float, probe: bool) -> None:
        model.take(now)
        waiter.future.set_result(Grant(model.bucket, now, probe))

    def _probe_gap(self, model: _Model) -> float:
        return PROBE_GAP if model.rate is None else max(PROBE_GAP, 1 / model.rate)

    def _probe_candidate(self, bucket: Bucket, now: float) -> _Waiter | None:
        """While a hint holds the bucket (not the pace), a request at its last useful moment
        may go as a probe, one per probe gap."""
        model = self._models[bucket]
        if model.blocked_until <= max(now, model.paced_at(now)):
            return None  # the pace holds it, not a hint: probing would only be refused
        if now - model.last_probe < self._probe_gap(model):
            return None
        due = [w for w in self._waiters[bucket] if not w.future.done() and w.latest <= now]
        return min(due) if due else None

    def _next_moment(self, bucket: Bucket, now: float) -> float:
        model = self._models[bucket]
        moment = model.ready_at(now)
        if model.blocked_until > model.paced_at(now):
            latest = min(
                (w.latest for w in self._waiters[bucket] if not w.future.done()),
                default=math.inf,
            )
            moment = min(moment, max(latest, model.last_probe + self._probe_gap(model)))
        return max(moment, now)

    # -- what the server answered ---------------------------------------------------------

    def succeeded(self, grant: Grant) -> None:
        model = self._models[grant.bucket]
        now = self._clock.now()
        if grant.probe:
            model.hint_disproved(now)
        before = model.rate
        model.ok(now)
        if model.rate != before:
            self._changed(grant.bucket)
        if self._pending(grant.bucket):  # a success may end a hint that held others back
            self._pump(grant.bucket)

    def rate_limited(self, grant: Grant, retry_after: float | None) -> float:
        """The request was refused with 429. Returns how long the bucket now waits."""
        model = self._models[grant.bucket]
        now = self._clock.now()
        hint = self._bounded_hint(model, retry_after)
        before = (model.rate, model.burst)
        model.refused(now, hint, grant.at, grant.probe)
        if (model.rate, model.burst) != before:
            self._changed(grant.bucket)
        self._pump(grant.bucket)
        return hint

    def _bounded_hint(self, model: _Model, retry_after: float | None) -> float:
        if retry_after is None or not math.isfinite(retry_after) or retry_after < 0:
            # No usable hint: wait one token's time.
            return 1.0 if model.rate is None else 1 / model.rate
        return min(retry_after, self._max_hint)

    def _changed(self, bucket: Bucket) -> None:
        if self.on_change is not None:
            self.on_change(bucket)
