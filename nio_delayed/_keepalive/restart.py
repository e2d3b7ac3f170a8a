"""One step of a due switch: restart its event (the common case), re-arm it, handle its fire seen
in the sync or another user's overwrite; and what follows when the server says the event is
gone."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from ..responses import DelayedEventError, GetDelayedEventResponse, UpdateDelayedEventResponse
from .arming import Arming
from .budget import Bucket, Priority
from .capacity import safety_margin
from .context import GONE, KeepAliveContext
from .events import switch_fields
from .fired import FireWatch
from .machine import SwitchState
from .overwrite import OverwriteGuard
from .switch import LostPolicy, SwitchEventKind, SwitchRuntime

__all__ = ["Restarter"]

# Longer than this in the budget's queue is a wait (s).
_WAITED = 0.05

logger = logging.getLogger(__name__)


class Restarter:
    """What a due switch does when the scheduler hands it a request task."""

    def __init__(
        self, context: KeepAliveContext, arming: Arming, guard: OverwriteGuard, fires: FireWatch
    ) -> None:
        self._ctx = context
        self._client = context.client
        self._arming = arming
        self._guard = guard
        self._fires = fires

    async def act(self, switch: SwitchRuntime) -> None:
        """The scheduler's request task for a due switch. Never raises."""
        overwrite_before = switch.overwrite
        try:
            if switch.machine.state is SwitchState.UNAUTHORIZED:
                return  # paused after it was due: resume() schedules it again
            if self._fires.pending(switch):
                self._fires.apply(switch, "it arrived in the client's sync")
            elif self._guard.pending(switch):
                await self._guard.handle(switch)
            elif switch.machine.state is SwitchState.REARMING:
                await self._arming.rearm(switch)
            else:
                await self._restart(switch)
        except Exception as exc:  # a bug must show, and must not stop the other switches
            logger.exception(
                "keep-alive step failed for %r", switch.handle, extra=switch_fields(switch)
            )
            self._ctx.retry_later(switch, None, f"internal error: {exc!r}")
        arrived = switch.overwrite is not None and overwrite_before is None
        if (arrived or self._fires.pending(switch)) and switch.machine.next_at is not None:
            # An overwrite or a fire seen while this request ran is handled next, at once (a
            # fire even if the server answered this restart with 200).
            switch.machine.hurry(self._ctx.clock.now())

    async def _restart(self, switch: SwitchRuntime) -> None:
        machine = switch.machine
        delay_id = switch.delay_id
        assert delay_id is not None
        deadline = machine.deadline
        # Past a long rate-limit hint, a restart may still go as a probe this close to its
        # deadline: half the safety margin before it.
        latest = None if deadline is None else deadline - safety_margin(machine.delay) / 2

        def send(sent_at: float) -> Awaitable[UpdateDelayedEventResponse | DelayedEventError]:
            if machine.deadline_passed(sent_at):
                # Due before its deadline, sent after it: the loop or the host stood still.
                self._ctx.emit(
                    switch,
                    SwitchEventKind.PROBABLY_FIRED,
                    "its deadline passed before its restart could be sent (event loop or host "
                    "stalled?); verifying",
                )
            machine.attempt_started()
            timeout = machine.attempt_timeout(sent_at, self._ctx.request_timeout)
            return self._client.restart_delayed_event(
                delay_id, policy=self._ctx.policy(timeout=timeout)
            )

        asked_at = self._ctx.clock.now()
        resp, sent_at = await self._ctx.request(
            Bucket.MANAGEMENT,
            Priority.AT_RISK if switch.over_budget else Priority.KEEP,
            send,
            switch=switch,
            deadline=deadline,
            latest=latest,
        )
        now = self._ctx.clock.now()
        if switch not in self._ctx.switches:
            return  # stopped meanwhile
        if isinstance(resp, UpdateDelayedEventResponse):
            # A restart that waited its turn in the budget keeps its new, later phase: switches
            # due together then spread out to the pace the server allows.
            waited = sent_at - asked_at > _WAITED
            await self._confirmed(switch, sent_at, now, keep_phase=not waited)
        elif resp.kind in GONE:
            await self._lost(switch, resp)
        else:
            self._failed(switch, resp, now)

    async def _confirmed(
        self, switch: SwitchRuntime, sent_at: float, now: float, keep_phase: bool
    ) -> None:
        previous = switch.machine.restarted(sent_at, now, keep_phase=keep_phase)
        if previous in (SwitchState.AT_RISK, SwitchState.PROBABLY_FIRED, SwitchState.UNAUTHORIZED):
            self._ctx.emit(
                switch, SwitchEventKind.RECOVERED, f"restart confirmed again (was {previous.value})"
            )
        if switch.alive_pending:
            await self._arming.publish_alive(switch)

    def _failed(self, switch: SwitchRuntime, resp: DelayedEventError, now: float) -> None:
        previous = self._ctx.retry_later(switch, resp, f"restart failed: {resp}")
        machine = switch.machine
        if machine.state is previous:
            return
        kind = (
            SwitchEventKind.PROBABLY_FIRED
            if machine.state is SwitchState.PROBABLY_FIRED
            else SwitchEventKind.AT_RISK
        )
        left = "" if machine.deadline is None else f"; deadline in {machine.deadline - now:.2f} s"
        self._ctx.emit(switch, kind, f"restarts are failing{left}", resp)

    async def _lost(self, switch: SwitchRuntime, resp: DelayedEventError) -> None:
        if self._fires.pending(switch):
            self._fires.apply(
                switch, "it arrived in the client's sync, and a restart found it gone", resp
            )
            return
        overwrite = switch.overwrite or await self._guard.find(switch)
        if overwrite is not None:
            # Gone because another user wrote the state (Synapse's rule), seen before the sync
            # showed it: the overwrite policy decides, not the loss policy.
            switch.overwrite = None
            await self._guard.apply(switch, overwrite, still_scheduled=False)
            return
        reason = await self._why_gone(switch)
        rearm = switch.settings.on_lost is LostPolicy.REARM
        switch.machine.lost(self._ctx.clock.now(), rearm)
        self._ctx.emit(
            switch, SwitchEventKind.LOST, f"the server no longer has the event: {reason}", resp
        )
        if not rearm:
            self._ctx.switches.forget(switch)

    async def _why_gone(self, switch: SwitchRuntime) -> str:
        delay_id = switch.delay_id
        assert delay_id is not None
        # Only with a token to spare: an explanation must not take one from a restart.
        sent = await self._ctx.request_now(
            Bucket.MANAGEMENT,
            lambda _: self._client.get_delayed_event(delay_id, policy=self._ctx.policy()),
        )
        if sent is None:
            return "no look-up made (the request budget is needed for restarts)"
        found = sent[0]
        if isinstance(found, GetDelayedEventResponse):
            event = found.delayed_event
            detail = f": {event.error}" if event.error else ""
            return f"it was {event.status.value}{detail}"
        # Synapse keeps no record of finalised events.
        return (
            "it was sent, cancelled, or overwritten by another user's state "
            "(the server keeps no record)"
        )
