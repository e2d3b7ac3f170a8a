"""What every part of the keep-alive shares: the client, the clock, the running switches, the
request budget, the events; the one path every request of the keep-alive takes (through the
budget); and the two ways an attempt ends without success."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from ..clock import Clock
from ..errors import ErrorKind
from ..limits import ServerLimits
from ..responses import DelayedEventError
from ..support import Dialect
from ..transport import RequestPolicy
from ..validation import Seconds
from .budget import Bucket, Grant, Priority, RequestBudget
from .events import Emitter
from .machine import Backoff, SwitchState
from .ownership import Ownership
from .ports import KeepAliveClient
from .record import SwitchRecord
from .registry import SwitchRegistry
from .switch import SwitchEventKind, SwitchRuntime

__all__ = ["GONE", "HOPELESS", "KeepAliveContext"]

R = TypeVar("R")

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
#: Answers after which the same request may well pass a moment later: a refusal for the pace
#: (the budget then waits as the server asked), no answer, or a server failure (after a back-off).
_RETRIED = (ErrorKind.RATE_LIMITED, ErrorKind.NETWORK, ErrorKind.SERVER_ERROR)


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
        limits: ServerLimits,
    ) -> None:
        self.client = client
        self.clock = clock
        self.request_timeout = request_timeout
        self.backoff = backoff
        self.rng = rng
        self.budget = RequestBudget(clock, limits)
        self.limits = limits
        # Requests on the wire at once (those waiting for the budget do not count).
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self.emitter = Emitter(lambda: self.clock.now())
        self.switches = SwitchRegistry()
        #: What the server offers, learnt at start.
        self.dialect: Dialect | None = None
        self.max_delay_ms: int | None = None
        #: How many delayed events the server keeps scheduled for one account.
        self.max_scheduled: int | None = None
        #: Whose leftovers the switches may take, and the bot's record of what it armed (both
        #: set at start).
        self.ownership = Ownership("", frozenset())
        self.record: SwitchRecord | None = None
        self._restart_policy = self._build_policy(request_timeout, 1)

    def forget_recorded(self, delay_ids: Iterable[str]) -> None:
        """Drop ended events from the bot's record, if it keeps one."""
        if self.record is not None:
            self.record.drop(delay_ids)

    def emit(
        self,
        switch: SwitchRuntime,
        kind: SwitchEventKind,
        message: str,
        error: DelayedEventError | None = None,
    ) -> None:
        self.emitter.emit(switch, kind, message, error)

    def policy(self, timeout: float | None = None) -> RequestPolicy:
        """The time-out of one keep-alive request (``request_timeout`` by default). One attempt:
        every retry goes through the budget again, never around it."""
        if timeout is None or timeout == self.request_timeout:
            return self._restart_policy  # the common case, built once
        return self._build_policy(timeout, 1)

    async def request(
        self,
        bucket: Bucket,
        priority: Priority,
        send: Callable[[float], Awaitable[R]],
        *,
        switch: SwitchRuntime | None = None,
        deadline: float | None = None,
        latest: float | None = None,
        attempts: int = 1,
        finish_sent: bool = False,
    ) -> tuple[R, float]:
        """Send one request when the budget lets it go, and tell the budget how it went.
        Returns the answer and when its request left.

        ``send(sent_at)`` makes the request. Up to ``attempts`` tries: after a 429 (the budget
        holds the next one back as long as the server asked) or a transient failure (after a
        back-off). ``deadline`` orders requests of one priority; ``latest`` is the last moment
        the request is still worth sending past a long hint (see :class:`RequestBudget`).
        ``finish_sent``: a request already sent when the caller is cancelled is seen through
        (``send`` gets its answer, bounded by the request's time-out) before the cancellation
        goes on; waiting for the budget is cancelled at once.
        """
        for attempt in range(1, attempts + 1):
            grant = await self._grant(bucket, priority, switch, deadline, latest)
            answer, sent_at = await self._send(grant, send, switch, finish_sent)
            error = answer if isinstance(answer, DelayedEventError) else None
            if error is None or error.kind not in _RETRIED or attempt == attempts:
                return answer, sent_at
            if error.kind is not ErrorKind.RATE_LIMITED:
                await self.sleep(self.backoff.wait(attempt, self.rng))
        raise AssertionError("unreachable: the last attempt returns")

    async def request_now(
        self, bucket: Bucket, send: Callable[[float], Awaitable[R]]
    ) -> tuple[R, float] | None:
        """Like :meth:`request` (one attempt), but only if the budget has a token to spare right
        now; None if not (nothing was sent)."""
        grant = self.budget.try_acquire(bucket)
        if grant is None:
            return None
        return await self._send(grant, send, None)

    async def free_request(self, send: Callable[[float], Awaitable[R]]) -> R:
        """A request no rate limit counts (reading room state)."""
        async with self._in_flight:
            with self.clock.busy():
                return await send(self.clock.now())

    async def _send(
        self,
        grant: Grant,
        send: Callable[[float], Awaitable[R]],
        switch: SwitchRuntime | None,
        finish_sent: bool = False,
    ) -> tuple[R, float]:
        async with self._in_flight:
            sent_at = self.clock.now()
            with self.clock.busy():
                if not finish_sent:
                    answer = await send(sent_at)
                else:
                    sending = asyncio.ensure_future(send(sent_at))
                    try:
                        answer = await asyncio.shield(sending)
                    except asyncio.CancelledError:
                        # What the server did still counts: for ``send``, and for the budget.
                        await asyncio.wait([sending])
                        if not sending.cancelled() and sending.exception() is None:
                            self._answered(grant, sending.result(), switch)
                        raise
        self._answered(grant, answer, switch)
        return answer, sent_at

    def _answered(self, grant: Grant, answer: object, switch: SwitchRuntime | None) -> None:
        error = answer if isinstance(answer, DelayedEventError) else None
        self._account(grant, error, switch)
        if error is not None and error.kind is ErrorKind.UNAUTHORIZED:
            self._unauthorized(switch, error)

    async def _grant(
        self,
        bucket: Bucket,
        priority: Priority,
        switch: SwitchRuntime | None,
        deadline: float | None,
        latest: float | None,
    ) -> Grant:
        granted = self.budget.try_acquire(bucket)
        if granted is not None:
            return granted  # the common case: a token at hand, nothing to wait for
        if switch is not None:
            switch.waiting_for_budget = True
        try:
            return await self.budget.acquire(bucket, priority, deadline, latest)
        finally:
            if switch is not None:
                switch.waiting_for_budget = False

    def _account(
        self, grant: Grant, error: DelayedEventError | None, switch: SwitchRuntime | None
    ) -> None:
        if error is not None and error.kind is ErrorKind.NETWORK:
            return  # no answer: nothing learned (the model counted it when it left)
        if error is None or error.kind is not ErrorKind.RATE_LIMITED:
            self.budget.succeeded(grant)  # answered: the server let it by
            return
        hint = None if error.retry_after_ms is None else error.retry_after_ms / 1000
        wait = self.budget.rate_limited(grant, hint)
        if switch is not None:
            switch.machine.rate_limit_waited()
            self.emit(
                switch,
                SwitchEventKind.RATE_LIMITED,
                f"rate limited ({grant.bucket.value}): its requests wait {wait:.2f} s",
                error,
            )
        if hint is not None:
            self._hint_threatens(grant.bucket, hint)

    def _unauthorized(self, switch: SwitchRuntime | None, error: DelayedEventError) -> None:
        """The access token was refused. Every request uses it, so every switch pauses at once
        rather than each spend a request to learn the same: none sends until resumed."""
        soft = " (soft logout: log in again to the same device to keep its keys)"
        message = (
            f"the server refused the access token{soft if error.soft_logout else ''}: paused, "
            "nothing is sent until the client has a new token (client.access_token, "
            "client.restore_login() or a new login) and KeepAliveManager.resume() is called; "
            "the event fires when its delay runs out"
        )
        others = [each for each in self.switches if each is not switch]
        for each in [switch, *others] if switch is not None else others:
            if each.machine.unauthorized():
                self.emit(each, SwitchEventKind.UNAUTHORIZED, message, error)

    def _hint_threatens(self, bucket: Bucket, hint: float) -> None:
        """A hint this long may outlast some deadlines: say so for each switch it puts at risk
        (their restarts will still be tried at their last useful moment)."""
        if bucket is not Bucket.MANAGEMENT:
            return
        now = self.clock.now()
        for switch in self.switches:
            machine = switch.machine
            if machine.deadline is None or machine.deadline - now > hint:
                continue
            if machine.warned():
                self.emit(
                    switch,
                    SwitchEventKind.AT_RISK,
                    f"the server asked every restart to wait {hint:.3g} s; this deadline is in "
                    f"{machine.deadline - now:.2f} s: it will be tried at its last useful "
                    "moment anyway",
                )

    async def within(self, seconds: float, awaitable: Awaitable[R]) -> R | None:
        """``awaitable``'s result, or None if it took longer than ``seconds`` (keep-alive clock):
        it is cancelled then."""
        task = asyncio.ensure_future(awaitable)
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = self.clock.call_later(max(0.0, seconds), expire)
        try:
            return await task
        except asyncio.CancelledError:
            if not expired:
                raise
            return None
        finally:
            timer.cancel()

    async def sleep(self, seconds: float) -> None:
        """Wait on the keep-alive's clock."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        timer = self.clock.call_later(seconds, wake)
        try:
            await done
        finally:
            timer.cancel()

    def _build_policy(self, timeout: float, attempts: int) -> RequestPolicy:
        # Seconds: durations this library already holds as seconds (no deprecation warning).
        return RequestPolicy(
            timeout=Seconds(timeout),
            max_attempts=attempts,
            max_retry_after=Seconds(min(10.0, timeout)),
            backoff_initial=Seconds(self.backoff.initial),
            backoff_max=Seconds(min(self.backoff.maximum, timeout)),
        )

    def retry_later(
        self, switch: SwitchRuntime, error: DelayedEventError | None, message: str
    ) -> SwitchState:
        """An attempt failed without saying the event is gone: the switch tries again later.
        After a 429 it asks again at once: the budget holds the request back as long as the
        server asked (and no longer than the deadline allows). Returns the state before."""
        now = self.clock.now()
        rate_limited = error is not None and error.kind is ErrorKind.RATE_LIMITED
        previous = switch.machine.state
        if previous is SwitchState.UNAUTHORIZED:
            return previous  # paused: resume() makes it try again
        switch.machine.failed(now, 0.0 if rate_limited else None)
        self.emit(switch, SwitchEventKind.RESTART_FAILED, message, error)
        return previous

    def fail_for_good(
        self, switch: SwitchRuntime, message: str, error: DelayedEventError | None
    ) -> None:
        """The switch cannot go on: it ends in state FAILED."""
        switch.machine.failed_for_good()
        self.emit(switch, SwitchEventKind.FAILED, message, error)
        self.switches.forget(switch)
