"""The timing and state of one dead-man's switch. Pure: it is told what happened and when, and
says what state the switch is in and when to act next. The rest of the keep-alive does the I/O,
and changes a switch's state and counters only through these methods.

Times are seconds on the keep-alive clock. The *deadline* is the predicted moment the server
sends the event: the time the last successful restart (or arming) was **sent**, plus the delay.
The server restarted the timer when it received the request, a little later, so the prediction
errs on the early side.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

__all__ = ["Backoff", "SwitchMachine", "SwitchState", "SwitchStats", "default_interval"]

# The shortest wait between two attempts, so that a server failing at once is not hammered.
MIN_RETRY_GAP = 0.05
# A failing switch waits at most one restart interval between attempts, or this long if its
# interval is shorter.
MIN_RECOVERY_POLL = 1.0
# The shortest time-out an attempt gets, even right before the deadline.
MIN_ATTEMPT_TIMEOUT = 0.05


class SwitchState(str, Enum):
    """Where a dead-man's switch stands (:attr:`DeadMansSwitch.state`)."""

    #: Being armed for the first time.
    STARTING = "starting"
    #: The last restart was confirmed; the deadline is ahead.
    ARMED = "armed"
    #: Restarts are failing; the deadline has not passed yet.
    AT_RISK = "at_risk"
    #: The deadline passed without a confirmed restart: the server has probably sent the event.
    #: Restarts go on: an answer of 200 resumes the switch, 404 re-arms it.
    PROBABLY_FIRED = "probably_fired"
    #: The server confirmed the event is gone (sent, cancelled, overwritten), or the client's
    #: sync showed it sent, and the policy is to stop.
    FIRED = "fired"
    #: Another user wrote the guarded state and the policy (``on_overwrite=CANCEL``) stopped the
    #: switch: its event will not clobber their state.
    OVERWRITTEN = "overwritten"
    #: The event is gone and a new one is being armed.
    REARMING = "rearming"
    #: The server refused the access token (401): the switch is paused, nothing is sent for it
    #: until ``KeepAliveManager.resume()`` after the client has a working token.
    UNAUTHORIZED = "unauthorized"
    STOPPING = "stopping"
    STOPPED = "stopped"
    #: The switch cannot go on (for example: the bot may no longer send into the room).
    FAILED = "failed"

    @property
    def may_be_scheduled(self) -> bool:
        """The switch's event is (or may be) scheduled: what happens to it concerns the switch
        (another user's overwrite, its fire seen in the sync)."""
        return self in (SwitchState.ARMED, SwitchState.AT_RISK, SwitchState.PROBABLY_FIRED)

    @property
    def is_final(self) -> bool:
        return self in (
            SwitchState.FIRED,
            SwitchState.OVERWRITTEN,
            SwitchState.STOPPED,
            SwitchState.FAILED,
        )


@dataclass
class SwitchStats:
    """Counters of one switch (or, summed, of a manager)."""

    restarts_ok: int = 0
    restarts_failed: int = 0
    #: Attempts made after a failure.
    retries: int = 0
    #: Times a 429 made the switch wait.
    rate_limit_waits: int = 0
    #: New events armed after one was lost.
    rearms: int = 0
    #: Events the server confirmed gone while the switch was running.
    losses: int = 0
    #: Of those, the ones seen sent in the client's sync: fires known for certain.
    fires_seen: int = 0
    #: The smallest time (s) left before the deadline when a restart was confirmed.
    min_margin: float | None = None

    def add(self, other: SwitchStats) -> None:
        self.restarts_ok += other.restarts_ok
        self.restarts_failed += other.restarts_failed
        self.retries += other.retries
        self.rate_limit_waits += other.rate_limit_waits
        self.rearms += other.rearms
        self.losses += other.losses
        self.fires_seen += other.fires_seen
        if other.min_margin is not None:
            self.min_margin = (
                other.min_margin
                if self.min_margin is None
                else min(self.min_margin, other.min_margin)
            )


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off between failed attempts: ``initial`` doubling up to ``maximum``,
    each wait drawn between half and all of that ("equal jitter") so that switches that fail
    together do not retry together."""

    initial: float = 0.25
    maximum: float = 30.0

    def wait(self, failures: int, rng: random.Random) -> float:
        ceiling = min(self.maximum, self.initial * 2 ** max(0, failures - 1))
        return rng.uniform(ceiling / 2, ceiling)


def default_interval(delay: float) -> float:
    """Restart every third of the delay: each deadline then has two more restart chances behind
    the one that is due, and an outage of up to two thirds of the delay goes unnoticed by the
    server."""
    return delay / 3


class SwitchMachine:
    def __init__(self, delay: float, interval: float, backoff: Backoff, rng: random.Random) -> None:
        if not 0 < interval < delay:
            raise ValueError(
                f"the restart interval ({interval} s) must be below the delay ({delay} s)"
            )
        self.delay = delay
        self.interval = interval
        self.backoff = backoff
        self.rng = rng
        self._state = SwitchState.STARTING
        self.deadline: float | None = None
        self.next_at: float | None = None
        self.failures = 0
        self._stats = SwitchStats()
        #: When the next restart was planned before :meth:`hurry` moved it forward.
        self.resume_at: float | None = None
        #: Re-arming (rather than restarting) when the access token was refused.
        self._paused_rearming = False

    @property
    def state(self) -> SwitchState:
        return self._state

    @property
    def stats(self) -> SwitchStats:
        """The live counters (read them; the methods below write them)."""
        return self._stats

    def armed(self, sent_at: float) -> None:
        """A new event was scheduled (or a leftover adopted) by a request sent at ``sent_at``."""
        self._confirmed(sent_at)
        # The first restart comes a little early, at random, so that switches armed together
        # spread out; every later one a whole interval after the one before was due (see
        # restarted()), so no request is wasted and the spread is kept.
        self.next_at = sent_at + self.interval * self.rng.uniform(0.9, 1.0)

    def _confirmed(self, sent_at: float) -> None:
        self.deadline = sent_at + self.delay
        self.failures = 0
        self._state = SwitchState.ARMED
        self.next_at = sent_at + self.interval

    def attempt_timeout(self, now: float, base: float) -> float:
        """How long the next attempt may take: never past the deadline it is trying to save."""
        if self.deadline is None or self.deadline <= now:
            return base  # nothing left to save: this attempt verifies
        return max(MIN_ATTEMPT_TIMEOUT, min(base, self.deadline - now))

    def restarted(self, sent_at: float, now: float, keep_phase: bool = True) -> SwitchState:
        """A restart sent at ``sent_at`` was confirmed at ``now``. Returns the previous state.

        ``keep_phase=False`` (while the server rate-limits) schedules the next one a whole
        interval after this one: catching up would only add load the server asked us to shed.
        """
        previous = self.state
        due = self.next_at if self.next_at is not None else sent_at
        if self.deadline is not None:
            margin = self.deadline - now
            if self._stats.min_margin is None or margin < self._stats.min_margin:
                self._stats.min_margin = margin
        self._stats.restarts_ok += 1
        self._confirmed(sent_at)
        # The next restart keeps the phase this one was due at: a restart that left late (the
        # loop was busy) does not drag its successors, and switches that were late together do
        # not stay bunched. Never sooner than half an interval after this one, though.
        if keep_phase:
            self.next_at = max(min(due, sent_at) + self.interval, sent_at + self.interval / 2)
        return previous

    def failed(self, now: float, retry_after: float | None = None) -> SwitchState:
        """An attempt failed without saying the event is gone. Returns the new state."""
        if self.state is SwitchState.UNAUTHORIZED:
            return self.state  # paused: nothing is planned until it is resumed
        self.failures += 1
        # Never longer than one restart interval (or 1 s): during an outage each switch asks no
        # more often than it does when healthy, and it notices the server's return within that.
        wait = min(
            self.backoff.wait(self.failures, self.rng), max(MIN_RECOVERY_POLL, self.interval)
        )
        if retry_after is not None:
            wait = max(retry_after, MIN_RETRY_GAP)  # the server said when; earlier is futile
        elif self.deadline is not None and self.deadline > now:
            # Keep trying before the deadline: at the latest halfway to it.
            wait = min(wait, max(MIN_RETRY_GAP, (self.deadline - now) / 2))
        self.next_at = now + wait
        if self.state in (SwitchState.ARMED, SwitchState.AT_RISK, SwitchState.PROBABLY_FIRED):
            self._stats.restarts_failed += 1
            past = self.deadline is not None and now >= self.deadline
            self._state = SwitchState.PROBABLY_FIRED if past else SwitchState.AT_RISK
        return self.state

    def deadline_passed(self, now: float) -> bool:
        """Mark it probably fired if its deadline passed unconfirmed; True if it just did."""
        if self.state not in (SwitchState.ARMED, SwitchState.AT_RISK):
            return False
        if self.deadline is None or now < self.deadline:
            return False
        self._state = SwitchState.PROBABLY_FIRED
        return True

    def lost(self, now: float, rearm: bool) -> None:
        """The server confirmed the event is gone."""
        self._stats.losses += 1
        self.deadline = None
        self.failures = 0
        if rearm:
            self._state = SwitchState.REARMING
            self.next_at = now
        else:
            self._state = SwitchState.FIRED
            self.next_at = None

    def fired(self, now: float, rearm: bool) -> None:
        """The client's sync showed the event sent: a loss known for certain."""
        self._stats.fires_seen += 1
        self.lost(now, rearm)

    def overwritten(self) -> None:
        """Stopped because another user wrote the guarded state."""
        self.deadline = None
        self.next_at = None
        self._state = SwitchState.OVERWRITTEN

    def rearmed(self) -> None:
        """The event armed (see :meth:`armed`) replaces one that was lost."""
        self._stats.rearms += 1

    def attempt_started(self) -> None:
        """A restart is being sent; after a failure it counts as a retry."""
        if self.failures:
            self._stats.retries += 1

    def warned(self) -> bool:
        """Something (a long rate-limit hint) threatens the deadline before any restart could
        fail: an armed switch is at risk. True if it just became so."""
        if self.state is not SwitchState.ARMED:
            return False
        self._state = SwitchState.AT_RISK
        return True

    def replanned(self, interval: float) -> None:
        """Restart every ``interval`` seconds from now on (the budget's plan)."""
        if not 0 < interval < self.delay:
            raise ValueError(
                f"a restart interval of {interval} s cannot keep a {self.delay} s delay"
            )
        self.interval = interval

    def rate_limit_waited(self) -> None:
        """A 429 made the switch wait."""
        self._stats.rate_limit_waits += 1

    def hurry(self, now: float) -> None:
        """Act at once (another user wrote the guarded state); :meth:`resume` undoes it."""
        self.resume_at = self.next_at
        self.next_at = now if self.next_at is None else min(self.next_at, now)

    def resume(self) -> None:
        """Go back to the restart time planned before :meth:`hurry`."""
        self.next_at = self.resume_at

    def unauthorized(self) -> bool:
        """The access token was refused: pause (nothing planned) until :meth:`resumed`. True if
        it just paused; a switch being added, stopped or ended is not paused."""
        if self.state not in (
            SwitchState.ARMED,
            SwitchState.AT_RISK,
            SwitchState.PROBABLY_FIRED,
            SwitchState.REARMING,
        ):
            return False
        self._paused_rearming = self.state is SwitchState.REARMING
        self._state = SwitchState.UNAUTHORIZED
        self.next_at = None
        self.failures = 0
        return True

    def resumed(self, now: float) -> bool:
        """The client has a new access token: act at once. A switch that was restarting verifies
        its event as after an outage (at risk, or probably fired if its deadline passed while it
        was paused); one that was re-arming arms. True if it was paused."""
        if self.state is not SwitchState.UNAUTHORIZED:
            return False
        if self._paused_rearming:
            self._state = SwitchState.REARMING
        elif self.deadline is not None and now >= self.deadline:
            self._state = SwitchState.PROBABLY_FIRED
        else:
            self._state = SwitchState.AT_RISK
        self.next_at = now
        return True

    def failed_for_good(self) -> None:
        """The event cannot be (re-)armed: the switch ends."""
        self._state = SwitchState.FAILED

    def stopping(self) -> None:
        self._state = SwitchState.STOPPING

    def stopped(self) -> None:
        self._state = SwitchState.STOPPED
