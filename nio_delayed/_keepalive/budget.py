"""How fast the keep-alive may ask: everything about 429s and pacing, for all switches of a client.

A 429 closes one gate for the whole client until the server's hint has passed, and shrinks the
window of requests in flight to one; it grows back as answers succeed (no stampede when the gate
opens). After a 429, requests also leave at most one per *pace* seconds: the server's hint is
roughly its rate. Each success halves the pace: a lone 429 costs little.

The scheduler asks :meth:`RequestBudget.earliest_send` / :meth:`~RequestBudget.may_send` before a
request leaves and reports each request's fate; nothing else reads the budget's fields.
"""

from __future__ import annotations

import math
import random

from .machine import Backoff

__all__ = ["RequestBudget"]

# A pace below this (s) is no pace at all.
_NO_PACE = 0.001


class RequestBudget:
    """The pace of one client's keep-alive requests (see the module's docstring)."""

    def __init__(self, max_in_flight: int, backoff: Backoff, rng: random.Random) -> None:
        self._max_in_flight = max_in_flight
        self._backoff = backoff
        self._rng = rng
        self._gate_until = 0.0
        self._pace = 0.0
        self._next_send = 0.0
        self._window = max_in_flight
        self._in_flight = 0
        self._closures = 0

    @property
    def closures(self) -> int:
        """How many 429s closed (or moved out) the gate."""
        return self._closures

    def earliest_send(self, now: float) -> float:
        """When the next request may leave: ``inf`` while the window of requests in flight is
        full (the end of one of them, :meth:`finished`, makes room)."""
        if self._in_flight >= self._window:
            return math.inf
        return max(now, self._gate_until, self._next_send)

    def may_send(self, now: float) -> bool:
        """Whether a request may leave now."""
        return self.earliest_send(now) <= now

    def sent(self, now: float) -> None:
        """A request leaves now."""
        self._in_flight += 1
        if self._pace:
            self._next_send = now + self._pace

    def finished(self) -> bool:
        """A request ended (however). True if the window was full: requests may be waiting."""
        was_full = self._in_flight >= self._window
        self._in_flight -= 1
        return was_full

    def succeeded(self, now: float) -> bool:
        """A restart was confirmed: the window grows and the pace eases. Returns True while
        requests are still held back (paced, or the gate closed)."""
        self._window = min(self._max_in_flight, self._window * 2)
        self._pace = self._pace / 2 if self._pace > _NO_PACE else 0.0
        return self._pace > 0 or now < self._gate_until

    def rate_limited(self, now: float, retry_after: float | None) -> float:
        """A 429 came back, with the server's hint ``retry_after`` (s) if it gave one. Returns how
        long every request waits now."""
        wait = retry_after if retry_after is not None else self._backoff.wait(1, self._rng)
        # One gate for all switches of this client; once it opens, one request at a time, paced
        # at the hint.
        if now + wait > self._gate_until:
            self._closures += 1
            self._gate_until = now + wait
        self._window = 1
        self._pace = max(self._pace, wait)
        return wait
