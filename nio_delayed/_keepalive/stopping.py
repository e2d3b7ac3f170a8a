"""Ending a switch by its exit policy: send its event now, cancel it, or leave it to fire.

Stops go first in the request budget, nearest deadline first. Under a rate limit a stop keeps
trying until the event is ended, the event can no longer be ended (a cancel after its deadline
is too late: it has fired), or ``stop_timeout`` has passed.
"""

from __future__ import annotations

import asyncio

from ..errors import ErrorKind
from ..responses import DelayedEventError, UpdateDelayedEventResponse
from .budget import Bucket, Priority
from .context import GONE, KeepAliveContext
from .switch import ExitPolicy, SwitchEventKind, SwitchRuntime

__all__ = ["Stopping"]

# How long before giving up a stop may still go past a long rate-limit hint (as a probe).
_PROBE_LEAD = 0.5
# Answers after which trying again cannot help.
_FINAL = (
    *GONE,
    ErrorKind.FORBIDDEN,
    ErrorKind.UNAUTHORIZED,
    ErrorKind.INVALID,
    ErrorKind.UNSUPPORTED,
)


class Stopping:
    """Ends switches, once each, by their exit policies."""

    def __init__(self, context: KeepAliveContext, stop_timeout: float) -> None:
        self._ctx = context
        self._stop_timeout = stop_timeout

    async def stop(self, switch: SwitchRuntime, policy: ExitPolicy | None) -> bool:
        """Stop ``switch`` by ``policy`` (default: its ``on_exit``). The first call decides;
        later ones wait for it. False if the event could not be ended as asked."""
        if switch.stop_task is None:
            switch.stop_task = asyncio.ensure_future(
                self._stop(switch, policy or switch.settings.on_exit)
            )
        return await asyncio.shield(switch.stop_task)

    async def _stop(self, switch: SwitchRuntime, policy: ExitPolicy) -> bool:
        if switch.machine.state.is_final:
            return True
        self._ctx.switches.forget(switch)
        switch.machine.stopping()
        if switch.waiting_for_budget and switch.act_task is not None:
            switch.act_task.cancel()  # a restart still waiting its turn is not needed now
        await switch.idle.wait()  # an attempt under way finishes first: it may change the exit
        message = "stopped; the event was left to fire by itself"
        error: DelayedEventError | None = None
        if switch.delay_id is not None and policy is not ExitPolicy.KEEP:
            message, error = await self._end_event(switch, policy)
            if error is None:
                self._ctx.forget_recorded([switch.delay_id])  # ended: nothing to find again
        switch.machine.stopped()
        self._ctx.emit(switch, SwitchEventKind.STOPPED, message, error)
        return error is None

    async def _end_event(
        self, switch: SwitchRuntime, policy: ExitPolicy
    ) -> tuple[str, DelayedEventError | None]:
        done = "sent" if policy is ExitPolicy.SEND else "cancelled"
        resp = await self._until_ended(switch, policy)
        if isinstance(resp, UpdateDelayedEventResponse):
            return f"stopped; the event was {done}", None
        if resp.kind in GONE:
            return "stopped; the event was already finalised", None
        return (
            f"stopped, but the event could not be {done} ({resp}); it stays scheduled and "
            "fires by itself when its delay runs out",
            resp,
        )

    async def _until_ended(
        self, switch: SwitchRuntime, policy: ExitPolicy
    ) -> UpdateDelayedEventResponse | DelayedEventError:
        delay_id, client, clock = switch.delay_id, self._ctx.client, self._ctx.clock
        assert delay_id is not None
        action = (
            client.send_delayed_event_now
            if policy is ExitPolicy.SEND
            else client.cancel_delayed_event
        )
        give_up = clock.now() + self._stop_timeout
        deadline = switch.machine.deadline
        if deadline is not None:
            # Past it the server has sent the event: too late to cancel, needless to send.
            give_up = min(give_up, deadline)
        failures = 0
        resp: UpdateDelayedEventResponse | DelayedEventError = DelayedEventError.local(
            ErrorKind.NETWORK,
            f"not done before the event's deadline or stop_timeout ({self._stop_timeout:g} s)",
        )
        while True:  # one try at least, even past the deadline: the server may be late
            sent = await self._ctx.within(
                max(give_up - clock.now(), self._ctx.request_timeout),
                self._ctx.request(
                    Bucket.MANAGEMENT,
                    Priority.STOP,
                    lambda _: action(delay_id, policy=self._ctx.policy()),
                    deadline=deadline,
                    latest=give_up - _PROBE_LEAD,
                ),
            )
            if sent is None:
                return resp  # out of time while waiting for the budget or the answer
            resp = sent[0]
            if isinstance(resp, UpdateDelayedEventResponse) or resp.kind in _FINAL:
                return resp
            failures += 1
            if clock.now() >= give_up:
                return resp
            if resp.kind is not ErrorKind.RATE_LIMITED:
                pause = self._ctx.backoff.wait(failures, self._ctx.rng)
                await self._ctx.sleep(min(pause, max(0.0, give_up - clock.now())))
