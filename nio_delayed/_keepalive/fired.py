"""Knowing a switch fired. The sender's own copy of a fired delayed event carries its delay id in
``unsigned`` (the merged MSC4140; Synapse 1.150 and later): while the client's sync runs, the
watch sees a switch's own event arrive, and the switch reports the fire as certain
(``FIRED_CONFIRMED``) before applying its ``on_lost`` policy. A server that answers 200 to
restarts of an event it has in fact sent is caught this way too.

Without a sync loop, or on a server that does not mark fired events, nothing is seen: a fire is
then guessed at the deadline (``PROBABLY_FIRED``) and known from the next restart's 404 or 409
(``LOST``), as before.
"""

from __future__ import annotations

from collections.abc import Callable

from nio.responses import SyncResponse

from ..delay_id import DelayId
from ..responses import DelayedEventError
from ..wire import own_fired_events
from .context import KeepAliveContext
from .switch import LostPolicy, SeenFired, SwitchEventKind, SwitchRuntime

__all__ = ["FireWatch"]


class FireWatch:
    """Notes the switches' own events in the sync; the switch's request task applies them."""

    def __init__(
        self, context: KeepAliveContext, schedule: Callable[[SwitchRuntime], None]
    ) -> None:
        self._ctx = context
        self._client = context.client
        self._schedule = schedule

    @staticmethod
    def pending(switch: SwitchRuntime) -> bool:
        """The sync showed the switch's current event sent, and the fire is not handled yet."""
        seen = switch.seen_fired
        return (
            seen is not None
            and seen.delay_id == switch.delay_id
            and switch.machine.state.may_be_scheduled
        )

    def on_sync(self, response: SyncResponse) -> None:
        """Look through a sync for the switches' own fired events. Runs inside nio's response
        handling: it only notes, the switch's request task acts (a request under way for the
        switch ends first, so nothing acts on one switch twice at once)."""
        by_delay_id: dict[str, SwitchRuntime] | None = None
        for _, delay_id, event in own_fired_events(response, self._client.user_id):
            if by_delay_id is None:  # built once a sync, and only if it has a fired event
                by_delay_id = {s.delay_id: s for s in self._ctx.switches if s.delay_id is not None}
            switch = by_delay_id.get(delay_id)
            if switch is not None:
                event_id = event.get("event_id")
                seen = SeenFired(DelayId(delay_id), event_id if isinstance(event_id, str) else None)
                self._note(switch, seen)

    def _note(self, switch: SwitchRuntime, seen: SeenFired) -> None:
        if switch.seen_fired is not None and switch.seen_fired.delay_id == seen.delay_id:
            return  # the same event again (a later sync can repeat it): noted already
        switch.seen_fired = seen
        if not self.pending(switch) or (switch.busy and not switch.waiting_for_budget):
            return  # a request on the wire: its task applies the fire when it ends
        switch.machine.hurry(self._ctx.clock.now())
        if switch.act_task is not None and switch.waiting_for_budget:
            # A restart waiting its turn is needless now; the scheduler plans the switch again
            # as its task ends, and the fire is applied at once.
            switch.act_task.cancel()
        else:
            self._schedule(switch)

    def apply(
        self, switch: SwitchRuntime, how: str, error: DelayedEventError | None = None
    ) -> None:
        """The switch's event was sent (``how``: what showed it; ``error``: the restart's answer
        that agreed, if one did): report it as certain and apply ``on_lost``. An overwrite noted
        meanwhile concerned the event that is gone: dropped."""
        seen = switch.seen_fired
        assert seen is not None
        switch.seen_fired = None
        switch.overwrite = None
        rearm = switch.settings.on_lost is LostPolicy.REARM
        switch.machine.fired(self._ctx.clock.now(), rearm)
        then = "arming a new one (on_lost=rearm)" if rearm else "stopped (on_lost=stop)"
        self._ctx.emit(
            switch,
            SwitchEventKind.FIRED_CONFIRMED,
            f"the server sent the event ({seen.delay_id.short}, {seen.event_id}): {how}; {then}",
            error,
        )
        if not rearm:
            self._ctx.switches.forget(switch)
