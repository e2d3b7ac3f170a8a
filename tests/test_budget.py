"""The request budget and the capacity plan: pure, on a fake clock."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from nio_delayed import RateLimit, ServerLimits
from nio_delayed._keepalive.budget import Bucket, Grant, Priority, RequestBudget
from nio_delayed._keepalive.capacity import Need, deliverable, plan, safety_margin
from nio_delayed.testing import FakeClock

MGMT, SCHED = Bucket.MANAGEMENT, Bucket.SCHEDULING


SYNAPSE = ServerLimits()


def budget(clock: FakeClock, mgmt: RateLimit | None = SYNAPSE.management) -> RequestBudget:
    return RequestBudget(clock, ServerLimits(mgmt, RateLimit(0.2, 10)))


async def take(b: RequestBudget, clock: FakeClock, bucket: Bucket = MGMT) -> Grant:
    """Acquire a token, letting time pass until it is granted."""
    task = asyncio.ensure_future(b.acquire(bucket, Priority.KEEP))
    while not task.done():
        await clock.advance(0.1)
    return task.result()


class Sender:
    """Tasks that each acquire one token and note when they got it."""

    def __init__(self, budget: RequestBudget, clock: FakeClock) -> None:
        self.budget, self.clock = budget, clock
        self.granted: list[tuple[str, float]] = []
        self.grants: dict[str, object] = {}

    def start(
        self,
        name: str,
        bucket: Bucket = MGMT,
        priority: Priority = Priority.KEEP,
        deadline: float | None = None,
        latest: float | None = None,
    ) -> asyncio.Task[None]:
        async def go() -> None:
            grant = await self.budget.acquire(bucket, priority, deadline, latest)
            self.grants[name] = grant
            self.granted.append((name, self.clock.now()))

        return asyncio.ensure_future(go())


async def test_the_burst_goes_at_once_then_requests_leave_at_the_paced_rate() -> None:
    clock = FakeClock()
    sender = Sender(budget(clock), clock)
    for i in range(8):
        sender.start(f"r{i}")
    await clock.advance(0)
    assert len(sender.granted) == 4  # burst 5, one token left unused as slack
    await clock.advance(10)
    times = [t - 1000 for _, t in sender.granted]
    gaps = [b - a for a, b in itertools.pairwise(times[3:])]
    assert all(g == pytest.approx(1 / 0.97, rel=1e-6) for g in gaps)


async def test_stops_go_first_then_the_nearest_deadline() -> None:
    clock = FakeClock()
    b = budget(clock, RateLimit(1.0, 2))
    sender = Sender(b, clock)
    sender.start("first")  # takes the only token of the burst
    await clock.advance(0)
    sender.start("late", deadline=1050)
    sender.start("soon", deadline=1020)
    sender.start("stop", priority=Priority.STOP, deadline=1090)
    sender.start("risky", priority=Priority.AT_RISK, deadline=1001)
    await clock.advance(10)
    assert [name for name, _ in sender.granted] == ["first", "stop", "soon", "late", "risky"]


async def test_one_unexpected_429_is_waited_out_in_its_bucket_only_and_changes_no_rate() -> None:
    clock = FakeClock()
    b = budget(clock)
    grant = await b.acquire(MGMT, Priority.KEEP)
    assert b.rate_limited(grant, 2.0) == 2.0
    assert b.rate(MGMT) == pytest.approx(0.97)
    sender = Sender(b, clock)
    sender.start("mgmt")
    sender.start("sched", bucket=SCHED, priority=Priority.ARM)
    await clock.advance(0)
    assert [n for n, _ in sender.granted] == ["sched"]
    await clock.advance(5)
    assert sender.granted[1][0] == "mgmt"
    assert sender.granted[1][1] >= 1002


async def test_repeated_surprises_shrink_the_model_and_it_grows_back_to_the_prior() -> None:
    clock = FakeClock()
    b = budget(clock)
    for _ in range(3):
        await clock.advance(10)
        b.succeeded(await take(b, clock))
        b.rate_limited(await take(b, clock), 0.5)
    assert b.rate(MGMT) == pytest.approx(0.97 * 0.75)
    # Successes grow it back: under the rate just refused for a while, then to the prior.
    for _ in range(400):
        b.succeeded(await take(b, clock))
    assert b.rate(MGMT) == pytest.approx(0.97 * 0.95)
    await clock.advance(600)
    for _ in range(200):
        b.succeeded(await take(b, clock))
    assert b.rate(MGMT) == pytest.approx(0.97)


async def test_refusals_in_a_row_or_of_requests_already_sent_are_one_surprise() -> None:
    """A burst of 429s (a proxy's, or answers to requests that were already on their way)
    says nothing new about the pace: it changes no rate."""
    clock = FakeClock()
    b = budget(clock)
    in_flight = [await b.acquire(MGMT, Priority.KEEP) for _ in range(4)]
    for grant in in_flight:
        b.rate_limited(grant, 0.5)
    for _ in range(5):
        b.rate_limited(await take(b, clock), 0.5)
    assert b.rate(MGMT) == pytest.approx(0.97)
    assert b.counters(MGMT)["surprises"] == 1


async def test_a_long_hint_lets_a_request_go_as_a_probe_at_its_last_useful_moment() -> None:
    clock = FakeClock()
    b = budget(clock)
    grant = await b.acquire(MGMT, Priority.KEEP)
    assert b.rate_limited(grant, 3600) == 300  # bounded
    sender = Sender(b, clock)
    sender.start("urgent", deadline=1030, latest=1027)
    sender.start("relaxed", deadline=1200, latest=1190)
    await clock.advance(26)
    assert sender.granted == []
    await clock.advance(1)
    assert sender.granted == [("urgent", 1027)]
    b.succeeded(sender.grants["urgent"])  # type: ignore[arg-type]
    await clock.advance(2)
    assert [n for n, _ in sender.granted] == ["urgent", "relaxed"]  # the hint was wrong


async def test_the_pace_itself_is_never_probed_past() -> None:
    clock = FakeClock()
    b = budget(clock, RateLimit(0.1, 1))
    sender = Sender(b, clock)
    sender.start("a", latest=1000)
    await clock.advance(0)
    sender.start("b", latest=1001)
    await clock.advance(5)
    assert [n for n, _ in sender.granted] == ["a"]


async def test_told_unlimited_it_believes_it_and_only_waits_out_hints() -> None:
    clock = FakeClock()
    b = budget(clock, None)
    for _ in range(10):
        b.succeeded(await take(b, clock))
        b.rate_limited(await take(b, clock), 0.1)
    assert b.rate(MGMT) is None
    b.rate_limited(await take(b, clock), 2.0)
    assert b.blocked_for(MGMT) == 2.0


async def test_a_cancelled_waiter_does_not_hold_up_the_others() -> None:
    clock = FakeClock()
    b = budget(clock, RateLimit(1.0, 2))
    sender = Sender(b, clock)
    sender.start("first")
    await clock.advance(0)
    gone = sender.start("gone", priority=Priority.STOP)
    sender.start("next")
    await clock.advance(0)
    gone.cancel()
    await clock.advance(1.1)
    assert [n for n, _ in sender.granted] == ["first", "next"]


# -- the plan ------------------------------------------------------------------------------------


def needs(count: int, delay: float = 30.0, start: int = 0, priority: int = 0) -> list[Need]:
    return [
        Need(i, priority, i, delay / 3, delay - safety_margin(delay))
        for i in range(start, start + count)
    ]


def test_everything_fits_unstretched_when_the_budget_allows() -> None:
    p = plan(needs(5), 0.9)
    assert p.stretch == 1
    assert not p.over_budget
    assert set(p.intervals.values()) == {10.0}


def test_intervals_stretch_evenly_to_fit() -> None:
    p = plan(needs(20), 0.9)
    assert not p.over_budget
    assert p.planned == pytest.approx(0.9)
    assert all(10 < i <= 27 for i in p.intervals.values())


def test_beyond_the_budget_the_first_added_fit_and_the_rest_are_at_risk_in_order() -> None:
    p = plan([*needs(30), *needs(5, start=30, priority=1)], 0.9)
    assert p.over_budget
    fit = sorted(p.intervals)
    assert fit[:5] == [0, 1, 2, 3, 4]
    assert set(range(30, 35)) <= set(p.intervals)
    assert p.at_risk == tuple(range(19, 30))
    assert all(i <= 27 for i in p.intervals.values())
    assert p.planned == pytest.approx(0.9)
    assert p.needed == pytest.approx(35 / 27)


def test_mixed_delays_stretch_until_each_reaches_its_longest() -> None:
    short = Need(1, 0, 1, 2.0, 6.0)
    long = Need(2, 0, 2, 10.0, 900.0)
    p = plan([short, long], 0.18)
    assert p.intervals == {1: 6.0, 2: pytest.approx(75.0)}
    assert p.planned == pytest.approx(0.18)


def test_unknown_limit_plans_what_was_asked() -> None:
    p = plan(needs(1000), None)
    assert p.stretch == 1
    assert not p.over_budget


def test_deliverable_follows_the_leaky_bucket() -> None:
    assert deliverable(15, 10, 0.2, 10) == 12
    assert deliverable(5, 10, 0.2, 10) == 5
    assert deliverable(0, 10, 0.2, 10) == 0
