"""The keep-alive scheduler's lazy-deletion heap, on its own (the request budget has
tests/test_budget.py)."""

from __future__ import annotations

from nio_delayed._keepalive.scheduler import Deadlines


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
