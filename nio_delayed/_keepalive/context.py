"""What every part of the keep-alive shares: the client, the clock, the running switches, the
request budget, the events, and the two ways an attempt ends without success."""

from __future__ import annotations

import random

from ..clock import Clock
from ..errors import ErrorKind
from ..responses import DelayedEventError
from ..support import Dialect
from ..transport import RequestPolicy
from .budget import RequestBudget
from .events import Emitter
from .machine import Backoff, SwitchState
from .ports import KeepAliveClient
from .registry import SwitchRegistry
from .switch import SwitchEventKind, SwitchRuntime

__all__ = ["GONE", "HOPELESS", "KeepAliveContext"]

#: Answers that say the event no longer exists.
GONE = (ErrorKind.NOT_FOUND, ErrorKind.CONFLICT)
#: Errors after which (re-)arming cannot succeed by trying again.
HOPELESS = (
    ErrorKind.FORBIDDEN,
    ErrorKind.INVALID,
    ErrorKind.UNSUPPORTED,
    ErrorKind.DELAY_TOO_LARGE,
    ErrorKind.SENT_IMMEDIATELY,
)


class KeepAliveContext:
    """Shared by the parts of one manager; built by it."""

    def __init__(
        self,
        client: KeepAliveClient,
        clock: Clock,
        *,
        request_timeout: float,
        max_in_flight: int,
        backoff: Backoff,
        rng: random.Random,
    ) -> None:
        self.client = client
        self.clock = clock
        self.request_timeout = request_timeout
        self.backoff = backoff
        self.rng = rng
        self.budget = RequestBudget(max_in_flight, backoff, rng)
        self.emitter = Emitter(lambda: self.clock.now())
        self.switches = SwitchRegistry()
        #: What the server offers, learnt at start.
        self.dialect: Dialect | None = None
        self.max_delay_ms: int | None = None
        self._restart_policy = self._build_policy(request_timeout, 1)

    def emit(
        self,
        switch: SwitchRuntime,
        kind: SwitchEventKind,
        message: str,
        error: DelayedEventError | None = None,
    ) -> None:
        self.emitter.emit(switch, kind, message, error)

    def policy(self, attempts: int = 1, timeout: float | None = None) -> RequestPolicy:
        """Retries and time-outs of one keep-alive request (``request_timeout`` by default)."""
        if timeout is None:
            timeout = self.request_timeout
        if timeout == self.request_timeout and attempts == 1:
            return self._restart_policy  # the common case, built once
        return self._build_policy(timeout, attempts)

    def _build_policy(self, timeout: float, attempts: int) -> RequestPolicy:
        return RequestPolicy(
            timeout=timeout,
            max_attempts=attempts,
            max_retry_after=min(10.0, timeout),
            backoff_initial=self.backoff.initial,
            backoff_max=min(self.backoff.maximum, timeout),
        )

    def retry_later(
        self, switch: SwitchRuntime, error: DelayedEventError | None, message: str
    ) -> SwitchState:
        """An attempt failed without saying the event is gone: the switch tries again later
        (after the server's hint, if it rate-limited us). Returns the state before."""
        now = self.clock.now()
        retry_after = self._rate_limited(switch, error, now)
        previous = switch.machine.state
        switch.machine.failed(now, retry_after)
        self.emit(switch, SwitchEventKind.RESTART_FAILED, message, error)
        return previous

    def _rate_limited(
        self, switch: SwitchRuntime, error: DelayedEventError | None, now: float
    ) -> float | None:
        if error is None or error.kind is not ErrorKind.RATE_LIMITED:
            return None
        hint = (error.retry_after_ms / 1000) if error.retry_after_ms is not None else None
        wait = self.budget.rate_limited(now, hint)
        switch.machine.rate_limit_waited()
        self.emit(
            switch,
            SwitchEventKind.RATE_LIMITED,
            f"rate limited: every switch waits {wait:.2f} s",
            error,
        )
        return wait

    def fail_for_good(
        self, switch: SwitchRuntime, message: str, error: DelayedEventError | None
    ) -> None:
        """The switch cannot go on: it ends in state FAILED."""
        switch.machine.failed_for_good()
        self.emit(switch, SwitchEventKind.FAILED, message, error)
        self.switches.forget(switch)
