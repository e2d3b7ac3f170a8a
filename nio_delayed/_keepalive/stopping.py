"""Ending a switch by its exit policy: send its event now, cancel it, or leave it to fire."""

from __future__ import annotations

import asyncio

from ..responses import DelayedEventError, UpdateDelayedEventResponse
from .context import GONE, KeepAliveContext
from .switch import ExitPolicy, SwitchEventKind, SwitchRuntime

__all__ = ["Stopping"]


class Stopping:
    """Ends switches, once each, by their exit policies."""

    def __init__(self, context: KeepAliveContext) -> None:
        self._ctx = context

    async def stop(self, switch: SwitchRuntime, policy: ExitPolicy | None) -> None:
        """Stop ``switch`` by ``policy`` (default: its ``on_exit``). The first call decides;
        later ones wait for it."""
        if switch.stop_task is None:
            switch.stop_task = asyncio.ensure_future(
                self._stop(switch, policy or switch.settings.on_exit)
            )
        await asyncio.shield(switch.stop_task)

    async def _stop(self, switch: SwitchRuntime, policy: ExitPolicy) -> None:
        if switch.machine.state.is_final:
            return
        self._ctx.switches.forget(switch)
        switch.machine.stopping()
        await switch.idle.wait()  # an attempt under way finishes first: it may change the exit
        message = "stopped; the event was left to fire by itself"
        error: DelayedEventError | None = None
        if switch.delay_id is not None and policy is not ExitPolicy.KEEP:
            message, error = await self._end_event(switch, policy)
        switch.machine.stopped()
        self._ctx.emit(switch, SwitchEventKind.STOPPED, message, error)

    async def _end_event(
        self, switch: SwitchRuntime, policy: ExitPolicy
    ) -> tuple[str, DelayedEventError | None]:
        assert switch.delay_id is not None
        client, bounded = self._ctx.client, self._ctx.policy(3)
        if policy is ExitPolicy.SEND:
            resp = await client.send_delayed_event_now(switch.delay_id, policy=bounded)
        else:
            resp = await client.cancel_delayed_event(switch.delay_id, policy=bounded)
        done = "sent" if policy is ExitPolicy.SEND else "cancelled"
        if isinstance(resp, UpdateDelayedEventResponse):
            return f"stopped; the event was {done}", None
        if resp.kind in GONE:
            return "stopped; the event was already finalised", None
        return (
            f"stopped, but the event could not be {done} ({resp}); it stays scheduled and "
            "fires by itself when its delay runs out",
            resp,
        )
