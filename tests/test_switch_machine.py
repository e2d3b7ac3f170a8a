"""The pure timing rules of one switch."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from nio_delayed import Backoff, SwitchState, SwitchStats
from nio_delayed._keepalive.machine import (
    MIN_ATTEMPT_TIMEOUT,
    MIN_RETRY_GAP,
    SwitchMachine,
    default_interval,
)


def machine(delay: float = 30.0, interval: float = 10.0) -> SwitchMachine:
    return SwitchMachine(
        delay,
        interval,
        Backoff(initial=timedelta(milliseconds=250), maximum=timedelta(seconds=30)),
        random.Random(7),
    )


def test_default_interval_is_a_third_of_the_delay() -> None:
    assert default_interval(30.0) == 10.0
    assert default_interval(2.0) == pytest.approx(0.667, abs=0.001)


def test_interval_must_be_below_the_delay() -> None:
    with pytest.raises(ValueError, match="below the delay"):
        machine(delay=10, interval=10)


def test_arming_sets_the_deadline_from_when_the_request_was_sent() -> None:
    m = machine()
    m.armed(sent_at=100.0)
    assert m.state is SwitchState.ARMED
    assert m.deadline == 130.0
    assert m.next_at is not None
    assert 109.0 <= m.next_at <= 110.0  # early by up to 10%, never late


def test_restart_moves_the_deadline_and_records_the_margin() -> None:
    m = machine()
    m.armed(100.0)
    m.next_at = 110.0  # due now (the first restart's random phase, pinned)
    previous = m.restarted(sent_at=110.0, now=110.2)
    assert previous is SwitchState.ARMED
    assert m.deadline == 140.0
    assert m.next_at == 120.0  # exactly one interval on: no request wasted
    assert m.stats.restarts_ok == 1
    assert m.stats.min_margin == pytest.approx(19.8)
    m.restarted(sent_at=139.0, now=139.5)
    assert m.stats.min_margin == pytest.approx(0.5)


def test_a_late_restart_keeps_the_schedule_it_was_due_at() -> None:
    m = machine()
    m.armed(100.0)
    m.next_at = 110.0
    m.restarted(sent_at=110.8, now=110.9)  # left 0.8 s late: the loop was busy
    assert m.deadline == 140.8  # the deadline follows the send...
    assert m.next_at == 120.0  # ...the schedule keeps its phase
    m.next_at = 120.0
    m.restarted(sent_at=128.0, now=128.1)  # very late (a stall): not right away again
    assert m.next_at == 133.0  # half an interval on
    m.next_at = 133.0
    m.restarted(sent_at=135.0, now=135.1, keep_phase=False)  # rate-limited: no catching up
    assert m.next_at == 145.0


def test_attempts_never_outlast_the_deadline() -> None:
    m = machine()
    m.armed(100.0)
    assert m.attempt_timeout(now=110.0, base=10.0) == 10.0
    assert m.attempt_timeout(now=127.0, base=10.0) == pytest.approx(3.0)
    assert m.attempt_timeout(now=129.99, base=10.0) == MIN_ATTEMPT_TIMEOUT
    assert m.attempt_timeout(now=131.0, base=10.0) == 10.0  # past it: the attempt verifies


def test_failures_back_off_but_stay_before_the_deadline() -> None:
    m = machine()
    m.armed(100.0)
    waits = []
    now = 110.0
    for _ in range(6):
        state = m.failed(now)
        assert state is SwitchState.AT_RISK
        assert m.next_at is not None
        waits.append(m.next_at - now)
        assert m.next_at <= now + max(MIN_RETRY_GAP, (130.0 - now) / 2)
        now = m.next_at
    assert now < 130.0
    assert m.stats.restarts_failed == 6


def test_an_outage_is_polled_no_slower_than_the_interval() -> None:
    m = machine(delay=30, interval=10)
    m.armed(100.0)
    now = 131.0  # past the deadline: the switch verifies until the server answers
    for _ in range(20):
        m.failed(now)
        assert m.next_at is not None
        assert m.next_at - now <= 10.0 + 1e-9
        now = m.next_at
    short = machine(delay=0.9, interval=0.3)
    short.armed(0.0)
    short.failed(5.0)
    assert short.next_at is not None
    assert short.next_at - 5.0 <= 1.0  # at least every second, even for short intervals


def test_a_server_hint_is_honoured_even_past_the_deadline() -> None:
    m = machine()
    m.armed(100.0)
    m.failed(128.0, retry_after=5.0)
    assert m.next_at == 133.0


def test_failure_after_the_deadline_means_probably_fired() -> None:
    m = machine()
    m.armed(100.0)
    assert m.failed(131.0) is SwitchState.PROBABLY_FIRED
    m.restarted(sent_at=135.0, now=135.1)
    assert m.state is SwitchState.ARMED


def test_deadline_passing_unconfirmed_is_reported_once() -> None:
    m = machine()
    m.armed(100.0)
    assert not m.deadline_passed(129.0)
    assert m.deadline_passed(130.0)
    assert m.state is SwitchState.PROBABLY_FIRED
    assert not m.deadline_passed(131.0)


def test_lost_rearms_now_or_stops() -> None:
    m = machine()
    m.armed(100.0)
    m.lost(now=120.0, rearm=True)
    assert (m.state, m.next_at, m.deadline) == (SwitchState.REARMING, 120.0, None)
    assert m.failed(120.0) is SwitchState.REARMING  # re-arming keeps trying, no deadline
    m.armed(sent_at=121.0)
    m.rearmed()
    assert (m.state, m.deadline, m.stats.rearms, m.stats.losses) == (SwitchState.ARMED, 151.0, 1, 1)
    m.lost(now=130.0, rearm=False)
    assert (m.state, m.next_at) == (SwitchState.FIRED, None)
    assert m.state.is_final


def test_backoff_doubles_with_equal_jitter_and_a_ceiling() -> None:
    backoff, rng = (
        Backoff(initial=timedelta(seconds=1), maximum=timedelta(seconds=8)),
        random.Random(1),
    )
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        for _ in range(50):
            assert ceiling / 2 <= backoff.wait(failures, rng) <= ceiling


def test_stats_add_up() -> None:
    total = SwitchStats()
    total.add(SwitchStats(restarts_ok=2, min_margin=5.0))
    total.add(SwitchStats(restarts_ok=1, rearms=1, min_margin=3.0))
    total.add(SwitchStats())
    assert (total.restarts_ok, total.rearms, total.min_margin) == (3, 1, 3.0)


def test_a_refused_token_pauses_with_nothing_planned_until_resumed() -> None:
    m = machine()
    m.armed(sent_at=100.0)
    assert m.unauthorized()
    assert (m.state, m.next_at) == (SwitchState.UNAUTHORIZED, None)
    assert not m.unauthorized()  # already paused
    m.failed(now=105.0)  # an answer that was on its way changes nothing
    assert (m.state, m.next_at) == (SwitchState.UNAUTHORIZED, None)
    assert not m.deadline_passed(now=200.0)  # paused: not reported as fired


@pytest.mark.parametrize(
    ("resumed_at", "state"), [(120.0, SwitchState.AT_RISK), (130.0, SwitchState.PROBABLY_FIRED)]
)
def test_resuming_acts_at_once_and_verifies_as_after_an_outage(
    resumed_at: float, state: SwitchState
) -> None:
    m = machine()
    m.armed(sent_at=100.0)
    m.unauthorized()
    assert m.resumed(now=resumed_at)
    assert (m.state, m.next_at) == (state, resumed_at)
    assert not m.resumed(now=resumed_at)  # only a paused switch resumes


def test_a_switch_paused_while_rearming_rearms_when_resumed() -> None:
    m = machine()
    m.armed(sent_at=100.0)
    m.lost(now=110.0, rearm=True)
    m.unauthorized()
    m.resumed(now=200.0)
    assert (m.state, m.next_at) == (SwitchState.REARMING, 200.0)


@pytest.mark.parametrize("final", ["stopping", "failed_for_good", "stopped"])
def test_a_switch_being_stopped_or_ended_is_not_paused(final: str) -> None:
    m = machine()
    m.armed(sent_at=100.0)
    getattr(m, final)()
    assert not m.unauthorized()
    assert m.state is not SwitchState.UNAUTHORIZED
