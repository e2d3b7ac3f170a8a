"""The keep-alive's request budget and its lazy-deletion heap, on their own."""

from __future__ import annotations

import math
import random

from nio_delayed import Backoff
from nio_delayed._keepalive.budget import RequestBudget
from nio_delayed._keepalive.scheduler import Deadlines


def budget(max_in_flight: int = 4) -> RequestBudget:
    return RequestBudget(max_in_flight, Backoff(initial=1.0, maximum=8.0), random.Random(1))


def test_requests_leave_at_once_up_to_the_window() -> None:
    b = budget(max_in_flight=2)
    assert b.may_send(10.0)
    b.sent(10.0)
    b.sent(10.0)
    assert b.earliest_send(10.0) == math.inf  # full: the end of a request makes room
    assert b.finished() is True  # it was full: the scheduler should look again
    assert b.may_send(10.0)
    assert b.finished() is False


def test_a_429_closes_one_gate_then_lets_one_request_at_a_time_through_at_the_hints_pace() -> None:
    b = budget()
    assert b.rate_limited(10.0, retry_after=2.0) == 2.0
    assert (b.closures, b.earliest_send(10.0)) == (1, 12.0)
    assert b.rate_limited(10.5, retry_after=1.0) == 1.0  # opens sooner: the gate stays
    assert (b.closures, b.earliest_send(11.0)) == (1, 12.0)
    b.sent(12.0)
    assert b.earliest_send(12.0) == math.inf  # the window shrank to one
    b.finished()
    assert b.earliest_send(12.0) == 14.0  # paced at the largest hint seen


def test_successes_widen_the_window_and_ease_the_pace() -> None:
    b = budget(max_in_flight=4)
    b.rate_limited(0.0, retry_after=2.0)
    b.sent(2.0)
    b.finished()
    assert b.succeeded(2.5) is True  # pace 1 s now: still held back
    b.sent(4.0)
    b.sent(4.0)  # the window is two
    assert b.earliest_send(4.0) == math.inf
    for _ in range(20):
        held_back = b.succeeded(5.0)
    assert held_back is False


def test_a_429_without_a_hint_waits_a_first_back_off() -> None:
    wait = budget().rate_limited(0.0, retry_after=None)
    assert 0.5 <= wait <= 1.0


def test_deadlines_skip_entries_that_no_longer_count() -> None:
    current = {"a": 5.0, "b": 7.0}
    heap: Deadlines[str] = Deadlines(lambda at, key: current.get(key) == at)
    heap.push(3.0, "a")  # replaced below: stale
    heap.push(5.0, "a")
    heap.push(7.0, "b")
    heap.push(1.0, "gone")
    assert heap.next_time() == 5.0
    assert heap.pop_due(4.0) is None
    assert heap.pop_due(6.0) == (5.0, "a")
    del current["b"]
    assert heap.pop_due(9.0) is None
    assert heap.next_time() is None
