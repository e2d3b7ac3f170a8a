"""Getting a switch's event scheduled: arming and re-arming it, the leftovers of a previous
process of the same owner (take, adopt, cancel; others' are left alone, see :mod:`.ownership`),
and publishing the "alive" event."""

from __future__ import annotations

import asyncio
import functools
import math
import uuid
from datetime import timedelta
from typing import Any

from ..clock import wall_ms
from ..delay_id import DelayId
from ..errors import ErrorKind
from ..models import DelayedEvent
from ..responses import (
    DelayedEventError,
    DelayedEventsListResponse,
    RoomPutStateDelayedResponse,
    RoomSendDelayedResponse,
    UpdateDelayedEventResponse,
)
from ..support import Dialect
from ..wire import ENCRYPTED_TYPE
from .budget import Bucket, Priority
from .capacity import safety_margin
from .context import GONE, HOPELESS, KeepAliveContext
from .ownership import Provenance, unmarked
from .record import RecordedSwitch
from .registry import identity, identity_of
from .switch import LeftoverPolicy, SwitchArmError, SwitchEventKind, SwitchRuntime

__all__ = ["Arming"]

# A leftover must be adopted or cancelled (else it fires while the new process lives): try
# harder than for one restart, each try waiting its turn in the budget.
_LEFTOVER_ATTEMPTS = 8


class Arming:
    """Schedules switches' events, and owns the leftovers a previous process left."""

    def __init__(self, context: KeepAliveContext) -> None:
        self._ctx = context
        self._client = context.client
        #: Events scheduled when the manager started, not yet claimed by a switch: a previous
        #: process's, and other devices' and programs' (never claimed).
        self.leftovers: list[DelayedEvent] = []

    async def arm_new(self, switch: SwitchRuntime) -> None:
        """Arm a switch being added, adopting or cancelling its leftovers, and publish "alive".
        Raises :class:`SwitchArmError` if its event could not be scheduled.

        Cancelled, it leaves ``switch.delay_id`` naming the event it scheduled or adopted, if
        any (a request on the wire is seen through), and the leftovers it had not finished
        with back for a later switch of the same event."""
        leftovers = self._take_leftovers(switch)
        try:
            if switch.settings.on_leftover is LeftoverPolicy.ADOPT:
                await self._adopt(switch, leftovers)
            if switch.delay_id is None:
                self._check_room_for_one_more(switch, leftovers)
                error = await self._arm_keeping(switch, leftovers)
                if error is not None:
                    self._ctx.fail_for_good(switch, f"could not arm: {error}", error)
                    raise SwitchArmError(f"could not arm {switch.handle!r}: {error}", error)
                self._ctx.emit(switch, SwitchEventKind.ARMED, f"armed ({switch.delay_id!r})")
            while leftovers:
                await self._cancel_leftover(switch, leftovers[0])
                leftovers.pop(0)
        except BaseException:
            self.leftovers.extend(leftovers)
            raise
        await self.publish_alive(switch)

    async def _arm_keeping(
        self, switch: SwitchRuntime, leftovers: list[DelayedEvent]
    ) -> DelayedEventError | None:
        """Arm the switch while its leftovers are kept from firing (see
        :meth:`_keep_leftovers`); they are cancelled once it is armed."""
        if not leftovers:
            return await self.arm(switch)
        keeper = asyncio.ensure_future(self._keep_leftovers(switch, leftovers))
        try:
            return await self.arm(switch)
        finally:
            keeper.cancel()
            await asyncio.wait([keeper])

    async def _keep_leftovers(self, switch: SwitchRuntime, leftovers: list[DelayedEvent]) -> None:
        """Restart each leftover before it is due for as long as the new event waits its turn:
        the scheduling rate is the slower one (Synapse: one every 5 s after a burst of 10), and
        a leftover must not fire while the new process lives. One found gone is dropped
        (nothing to cancel)."""
        clock = self._ctx.clock

        def delay(leftover: DelayedEvent) -> float:
            return (leftover.delay_ms or switch.settings.delay_ms) / 1000

        # When each is due, as the server said (on its clock), then as we restarted it (on
        # ours); and, before our first restart, at the latest when the arming has waited a
        # safety margin (it waits for the budget, then): the server's clock may run ahead.
        due = {leftover.delay_id: self._due(leftover) for leftover in leftovers}
        first = {e.delay_id: clock.now() + safety_margin(delay(e)) for e in leftovers}

        def wake(leftover: DelayedEvent) -> float:
            at = due[leftover.delay_id]
            if at is None:
                return clock.now()
            # Before it is due, with time for a wait in the budget and one more try.
            return min(at - 2 * safety_margin(delay(leftover)), first[leftover.delay_id])

        while leftovers:
            leftover = min(leftovers, key=wake)
            await self._ctx.sleep(wake(leftover) - clock.now())
            resp, sent_at = await self._ctx.request(
                Bucket.MANAGEMENT,
                Priority.KEEP,
                functools.partial(self._restart, leftover.delay_id),
                deadline=due[leftover.delay_id],
            )
            if isinstance(resp, UpdateDelayedEventResponse):
                due[leftover.delay_id] = sent_at + delay(leftover)
                first[leftover.delay_id] = math.inf
            elif resp.kind in GONE:
                leftovers.remove(leftover)
                self._ctx.forget_recorded([leftover.delay_id])
            elif resp.kind is not ErrorKind.RATE_LIMITED:  # the budget waits after a 429
                await self._ctx.sleep(self._ctx.backoff.wait(1, self._ctx.rng))

    def _check_room_for_one_more(
        self, switch: SwitchRuntime, leftovers: list[DelayedEvent]
    ) -> None:
        """Refuse, before sending anything, a switch the account has no room for: the server
        keeps at most ``max_scheduled`` delayed events per account, and a full account would
        refuse this one (and, later, a re-arm of any switch)."""
        maximum = self._ctx.max_scheduled
        # Every running switch holds one event; leftovers are events too until cancelled.
        scheduled = len(self._ctx.switches) + len(self.leftovers) + len(leftovers)
        if maximum is None or scheduled < maximum:
            return
        message = (
            f"the account has {scheduled} delayed events scheduled, the server's maximum: "
            "nothing was sent; stop some switches or cancel leftovers (nio-delayed list), or "
            "raise the limit (Synapse: experimental_features.msc4140_max_delayed_events_per_user)"
        )
        self._ctx.fail_for_good(switch, message, None)
        raise SwitchArmError(f"no room for {switch.handle!r}: {message}")

    async def rearm(self, switch: SwitchRuntime) -> None:
        """Arm a new event for a switch whose event is gone."""
        error = await self.arm(switch, attempts=1)
        if switch not in self._ctx.switches:
            return
        if error is None:
            switch.machine.rearmed()
            self._ctx.emit(switch, SwitchEventKind.REARMED, f"armed again ({switch.delay_id!r})")
            if switch.rearm_quietly:
                switch.rearm_quietly = False
            else:
                await self.publish_alive(switch)
            return
        if error.kind in HOPELESS:
            self._ctx.fail_for_good(switch, f"cannot arm again: {error}", error)
            return
        self._ctx.retry_later(switch, error, f"arming again failed (will retry): {error}")

    async def arm(self, switch: SwitchRuntime, attempts: int = 3) -> DelayedEventError | None:
        """Schedule the switch's event; on success the machine is armed. Returns the error."""
        tx_id = switch.tx_id = switch.tx_id or f"nio-delayed-{uuid.uuid4()}"
        replaced = switch.delay_id  # the scheduling sets the new one on the switch
        resp, sent_at = await self._scheduled(switch, tx_id, attempts)
        sent_wall_ms = wall_ms() - round((self._ctx.clock.now() - sent_at) * 1000)
        if isinstance(resp, DelayedEventError):
            return resp
        delay_id = resp.delay_id
        self._record(switch, delay_id, switch.settings.content, sent_wall_ms, replaced)
        switch.delay_id = delay_id
        switch.tx_id = None  # the next arming is a new event
        switch.armed_wall_ms = sent_wall_ms
        switch.machine.armed(sent_at)
        return None

    def _record(
        self,
        switch: SwitchRuntime,
        delay_id: DelayId,
        content: dict[str, Any],
        armed_ms: int,
        replaced: DelayId | None,
    ) -> None:
        """Note in the bot's record (if it keeps one) that the switch's event is now
        ``delay_id``; the event it replaces (``replaced``) is gone."""
        record = self._ctx.record
        if record is None:
            return
        s = switch.settings
        record.keep(
            RecordedSwitch(
                delay_id,
                s.room_id,
                s.event_type,
                s.state_key,
                content,
                s.delay_ms,
                self._ctx.ownership.owner,
                armed_ms,
            )
        )
        if replaced is not None and replaced != delay_id:
            record.drop([replaced])

    async def _schedule(
        self, switch: SwitchRuntime, tx_id: str
    ) -> RoomSendDelayedResponse | RoomPutStateDelayedResponse | DelayedEventError:
        s = switch.settings
        policy = self._ctx.policy()
        delay = timedelta(milliseconds=s.delay_ms)
        resp: RoomSendDelayedResponse | RoomPutStateDelayedResponse | DelayedEventError
        if s.state_key is None:
            sticky = s.sticky_duration_ms
            resp = await self._client.room_send_delayed(
                s.room_id,
                s.event_type,
                s.content,
                delay,
                tx_id,
                ignore_unverified_devices=s.ignore_unverified_devices,
                policy=policy,
                sticky_duration=None if sticky is None else timedelta(milliseconds=sticky),
            )
        else:
            resp = await self._client.room_put_state_delayed(
                s.room_id, s.event_type, s.content, delay, s.state_key, policy=policy
            )
        if not isinstance(resp, DelayedEventError):
            # Known as soon as it is scheduled, also when whoever waits is being cancelled: an
            # add() that does not finish cancels it.
            switch.delay_id = resp.delay_id
        return resp

    async def _scheduled(
        self, switch: SwitchRuntime, tx_id: str, attempts: int
    ) -> tuple[
        RoomSendDelayedResponse | RoomPutStateDelayedResponse | DelayedEvent | DelayedEventError,
        float,
    ]:
        """Schedule the switch's event, up to ``attempts`` tries; the answer (or the event found
        scheduled) and when its request left.

        A legacy ``/state`` request has no transaction id: an answer lost on the way may hide an
        event the server scheduled, and sending again would schedule a second one, left to fire.
        So after no answer it looks for that event before it tries again."""
        blind = switch.settings.state_key is not None and self._ctx.dialect is Dialect.LEGACY
        for attempt in range(1, attempts + 1):
            resp, sent_at = await self._ctx.request(
                Bucket.SCHEDULING,
                Priority.ARM,
                lambda _: self._schedule(switch, tx_id),
                switch=switch,
                attempts=1 if blind else attempts,
                finish_sent=True,  # an event scheduled for a cancelled caller must be known
            )
            if not blind or not isinstance(resp, DelayedEventError):
                return resp, sent_at
            if resp.kind is ErrorKind.NETWORK:
                found = await self._find_unowned(switch)
                if found is not None:
                    return found, sent_at
            elif resp.kind not in (ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR):
                return resp, sent_at
            if attempt < attempts and resp.kind is not ErrorKind.RATE_LIMITED:
                await self._ctx.sleep(self._ctx.backoff.wait(attempt, self._ctx.rng))
        return resp, sent_at

    async def _find_unowned(self, switch: SwitchRuntime) -> DelayedEvent | None:
        listing, _ = await self._ctx.request(
            Bucket.MANAGEMENT,
            Priority.KEEP,
            lambda _: self._client.delayed_events(policy=self._ctx.policy()),
            switch=switch,
            attempts=3,
        )
        if not isinstance(listing, DelayedEventsListResponse):
            return None
        # Ours is an event of the switch's exact content that no running switch holds and that
        # was not already there at start (another device's, or a leftover).
        known = {s.delay_id for s in self._ctx.switches} | {e.delay_id for e in self.leftovers}
        s = switch.settings
        for event in listing.scheduled:
            same = (event.room_id, event.type, event.state_key, event.content) == (
                s.room_id,
                s.event_type,
                s.state_key,
                s.content,
            )
            if same and event.delay_id not in known:
                return event
        return None

    async def publish_alive(self, switch: SwitchRuntime) -> None:
        alive = switch.settings.alive
        if alive is None:
            return
        result, _ = await self._ctx.request(
            Bucket.SCHEDULING,
            Priority.ALIVE,
            lambda _: self._client.send_event_bounded(
                switch.settings.room_id,
                alive.event_type,
                alive.content,
                alive.state_key,
                ignore_unverified_devices=switch.settings.ignore_unverified_devices,
                policy=self._ctx.policy(),
            ),
            switch=switch,
            attempts=3,
        )
        switch.alive_pending = isinstance(result, DelayedEventError)
        if isinstance(result, DelayedEventError):
            self._ctx.emit(
                switch,
                SwitchEventKind.ALIVE_FAILED,
                f"could not publish the alive event (will retry): {result}",
                result,
            )
        else:
            self._ctx.emit(
                switch, SwitchEventKind.ALIVE_PUBLISHED, f"alive event {alive.event_type} published"
            )

    # -- leftovers of a previous process ---------------------------------------------------

    def _take_leftovers(self, switch: SwitchRuntime) -> list[DelayedEvent]:
        """This owner's leftovers for this switch's event, latest due first. Those of other
        owners stay where they are, and are reported."""
        wanted = identity_of(switch)
        ownership = self._ctx.ownership

        def same(event: DelayedEvent) -> bool:
            event_type = event.type
            if event_type == ENCRYPTED_TYPE and event.state_key is None:
                event_type = switch.settings.event_type  # its key is readable; its type is not
            return identity(event.room_id, event_type, event.state_key, event.content) == wanted

        mine: list[DelayedEvent] = []
        for event in [e for e in self.leftovers if same(e)]:
            provenance, why = ownership.of(event, switch.settings)
            if provenance is Provenance.FOREIGN:
                self._ctx.emit(
                    switch,
                    SwitchEventKind.FOREIGN_LEFTOVER,
                    f"left alone {event.delay_id!r}, scheduled on the same event by another "
                    f"device or program of the account ({why}; this owner is "
                    f"{ownership.owner!r}): it fires when its delay runs out",
                )
            else:
                mine.append(event)
        taken = {id(e) for e in mine}
        self.leftovers = [e for e in self.leftovers if id(e) not in taken]
        return sorted(mine, key=lambda e: e.due_ts or 0, reverse=True)

    async def _adopt(self, switch: SwitchRuntime, leftovers: list[DelayedEvent]) -> None:
        if switch.settings.sticky_duration_ms is not None:
            # No listing says whether a leftover is sticky: arm a new one that surely is, then
            # cancel the leftovers.
            return
        for leftover in list(leftovers):
            if (unmarked(leftover.content), leftover.delay_ms) != (
                unmarked(switch.settings.content),
                switch.settings.delay_ms,
            ):
                # A different event now (or an encrypted one, whose text cannot be compared):
                # arm the new one, then cancel this one. (The owner marker may be missing: an
                # earlier version's event is adopted all the same.)
                continue
            sent_wall_ms = wall_ms()
            resp, sent_at = await self._ctx.request(
                Bucket.MANAGEMENT,
                Priority.KEEP,
                functools.partial(self._restart, leftover.delay_id),
                switch=switch,
                deadline=self._due(leftover),
                attempts=_LEFTOVER_ATTEMPTS,
            )
            leftovers.remove(leftover)
            if isinstance(resp, UpdateDelayedEventResponse):
                self._record(
                    switch, leftover.delay_id, leftover.content, sent_wall_ms, switch.delay_id
                )
                switch.delay_id = leftover.delay_id
                switch.armed_wall_ms = sent_wall_ms
                switch.machine.armed(sent_at)
                self._ctx.emit(
                    switch,
                    SwitchEventKind.ADOPTED,
                    f"took over {leftover.delay_id!r} from a previous process",
                )
                return
            if resp.kind in GONE:
                self._ctx.forget_recorded([leftover.delay_id])
            else:
                # Neither live nor gone for sure: leave it to be cancelled after arming.
                leftovers.append(leftover)

    def _due(self, leftover: DelayedEvent) -> float | None:
        """When the leftover fires, on the keep-alive clock: its requests go in deadline order
        with the running switches' restarts (many leftovers at once would otherwise queue
        behind them, and fire)."""
        due_ts = leftover.due_ts
        if due_ts is None:
            return None
        return self._ctx.clock.now() + (due_ts - wall_ms()) / 1000

    async def _restart(
        self, delay_id: str, _: float
    ) -> UpdateDelayedEventResponse | DelayedEventError:
        return await self._client.restart_delayed_event(delay_id, policy=self._ctx.policy())

    async def _cancel_leftover(self, switch: SwitchRuntime, leftover: DelayedEvent) -> None:
        resp, _ = await self._ctx.request(
            Bucket.MANAGEMENT,
            Priority.STOP,
            lambda _: self._client.cancel_delayed_event(
                leftover.delay_id, policy=self._ctx.policy()
            ),
            switch=switch,
            deadline=self._due(leftover),
            attempts=_LEFTOVER_ATTEMPTS,
        )
        if isinstance(resp, UpdateDelayedEventResponse) or resp.kind in GONE:
            self._ctx.forget_recorded([leftover.delay_id])
            message = f"cancelled {leftover.delay_id!r} left by a previous process"
            error = None
        else:
            message = (
                f"could not cancel {leftover.delay_id!r} left by a previous process; "
                f"it may still fire: {resp}"
            )
            error = resp
        self._ctx.emit(switch, SwitchEventKind.LEFTOVER_CANCELLED, message, error)
