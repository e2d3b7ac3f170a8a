"""The state-overwrite guard. Synapse cancels a delayed state event when another user writes the
same state; other servers may not. The guard watches the client's sync for such writes and
applies the switch's :class:`OverwritePolicy`, so a switch behaves the same on every server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nio.responses import SyncResponse

from ..models import DelayedEventStatus
from ..responses import DelayedEventError, GetDelayedEventResponse
from .budget import Bucket, Priority
from .context import GONE, KeepAliveContext
from .registry import identity
from .switch import Overwrite, OverwritePolicy, SwitchEventKind, SwitchRuntime

__all__ = ["OverwriteGuard"]

R = TypeVar("R")


class OverwriteGuard:
    """Notes other users' writes from the sync; acts on them when the scheduler says."""

    def __init__(
        self, context: KeepAliveContext, schedule: Callable[[SwitchRuntime], None]
    ) -> None:
        self._ctx = context
        self._client = context.client
        self._schedule = schedule

    @staticmethod
    def pending(switch: SwitchRuntime) -> bool:
        """An overwrite was seen and is to be handled before anything else."""
        return switch.overwrite is not None and switch.machine.state.may_be_scheduled

    def on_sync(self, response: SyncResponse) -> None:
        """Look through a sync for state written by another user at a guarded (room, type,
        state key). Runs inside nio's response handling: it only notes, the scheduler acts."""
        me = self._client.user_id
        for room_id, info in response.rooms.join.items():
            for event in (*info.state, *info.timeline.events):
                source = getattr(event, "source", None)
                if not isinstance(source, dict):
                    continue
                state_key = source.get("state_key")
                if not isinstance(state_key, str):
                    continue
                key = identity(room_id, source.get("type", ""), state_key, source)
                switch = self._ctx.switches.get(key)
                overwrite = None if switch is None else _overwrite_of(switch, source, me)
                if switch is not None and overwrite is not None:
                    self._note(switch, overwrite)

    def _note(self, switch: SwitchRuntime, overwrite: Overwrite) -> None:
        if switch.overwrite is not None or not switch.machine.state.may_be_scheduled:
            return
        if overwrite.event_id == switch.last_overwrite_id:
            return  # the same write again (a later sync can repeat state): handled already
        switch.last_overwrite_id = overwrite.event_id
        switch.overwrite = overwrite
        if not switch.busy:  # else the scheduler hurries it when the request ends
            switch.machine.hurry(self._ctx.clock.now())
            self._schedule(switch)

    async def find(self, switch: SwitchRuntime) -> Overwrite | None:
        """For a state switch whose event is gone: did another user write the state since it was
        scheduled? (Synapse's rule cancels it then.) One look at the current state event."""
        s = switch.settings
        if s.state_key is None:
            return None
        state_key = s.state_key
        current = await self._ctx.free_request(
            lambda _: self._client.current_state_event(
                s.room_id, s.event_type, state_key, policy=self._ctx.policy()
            )
        )
        if not isinstance(current, dict):
            return None
        overwrite = _overwrite_of(switch, current, self._client.user_id)
        if overwrite is not None:
            switch.last_overwrite_id = overwrite.event_id
        return overwrite

    async def handle(self, switch: SwitchRuntime) -> None:
        """Another user wrote the guarded state: find out whether the server kept our event,
        then apply the switch's overwrite policy."""
        overwrite = switch.overwrite
        assert overwrite is not None
        found = await self._keep(
            switch,
            lambda delay_id: self._client.get_delayed_event(delay_id, policy=self._ctx.policy()),
        )
        if switch not in self._ctx.switches:
            return
        if isinstance(found, GetDelayedEventResponse):
            still_scheduled = found.delayed_event.status is DelayedEventStatus.SCHEDULED
        elif found.kind in GONE:
            still_scheduled = False
        else:
            self._ctx.retry_later(
                switch,
                found,
                f"could not look at the event after {overwrite.sender}'s overwrite (will retry): "
                f"{found}",
            )
            return
        switch.overwrite = None
        await self.apply(switch, overwrite, still_scheduled)

    async def apply(
        self, switch: SwitchRuntime, overwrite: Overwrite, still_scheduled: bool
    ) -> None:
        policy = switch.settings.on_overwrite
        what = (
            f"{overwrite.sender} wrote {switch.settings.event_type} {switch.settings.state_key!r}"
        )
        if not still_scheduled:
            what += "; the server had already cancelled ours (cancelled by state update)"
        if policy is OverwritePolicy.IGNORE and still_scheduled:
            # Nothing changed for our event: its restarts go on as they were planned.
            switch.machine.resume()
            self._ctx.emit(
                switch,
                SwitchEventKind.OVERWRITTEN,
                f"{what}; ignored (on_overwrite=ignore): ours stays armed",
            )
            return
        if still_scheduled:
            if not await self._cancel_ours(switch, overwrite, what):
                return
            what += "; ours cancelled"
        if policy is OverwritePolicy.CANCEL:
            switch.machine.overwritten()
            self._ctx.emit(
                switch, SwitchEventKind.OVERWRITTEN, f"{what}; stopped (on_overwrite=cancel)"
            )
            self._ctx.switches.forget(switch)
            return
        switch.machine.lost(self._ctx.clock.now(), rearm=True)
        switch.rearm_quietly = policy is OverwritePolicy.IGNORE
        then = (
            "arming a new one, without publishing alive (on_overwrite=ignore)"
            if switch.rearm_quietly
            else "arming a new one and publishing alive again (on_overwrite=rearm)"
        )
        self._ctx.emit(switch, SwitchEventKind.OVERWRITTEN, f"{what}; {then}")

    async def _cancel_ours(self, switch: SwitchRuntime, overwrite: Overwrite, what: str) -> bool:
        """Cancel our still scheduled event; False if it must be tried again (or the switch
        stopped meanwhile)."""
        resp = await self._keep(
            switch,
            lambda delay_id: self._client.cancel_delayed_event(delay_id, policy=self._ctx.policy()),
        )
        if switch not in self._ctx.switches:
            return False
        if isinstance(resp, DelayedEventError) and resp.kind not in GONE:
            switch.overwrite = overwrite  # try again: ours must not fire over theirs
            self._ctx.retry_later(
                switch, resp, f"{what}; could not cancel ours yet (will retry): {resp}"
            )
            return False
        return True

    async def _keep(self, switch: SwitchRuntime, call: Callable[[str], Awaitable[R]]) -> R:
        """A management request about ``switch``'s event, as urgent as its restarts."""
        delay_id = switch.delay_id
        assert delay_id is not None
        answer, _ = await self._ctx.request(
            Bucket.MANAGEMENT,
            Priority.KEEP,
            lambda _: call(delay_id),
            switch=switch,
            deadline=switch.machine.deadline,
        )
        return answer


def _overwrite_of(switch: SwitchRuntime, event: dict[str, Any], me: str) -> Overwrite | None:
    """``event`` (a state event at the switch's room, type and state key) as an overwrite of
    its event: written by another user, after our event was scheduled. Earlier writes are not:
    the server's rule ignores them too."""
    sender, ts, event_id = event.get("sender"), event.get("origin_server_ts"), event.get("event_id")
    if not isinstance(sender, str) or sender == me or not isinstance(event_id, str):
        return None
    if not isinstance(ts, int) or ts < switch.armed_wall_ms:
        return None
    return Overwrite(sender, event_id, ts)
