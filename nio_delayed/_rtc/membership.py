"""A bot's membership of a room's MatrixRTC session: :class:`RtcMembership`.

The leave is armed first, as a dead-man's switch of the client's keep-alive (same request budget,
adoption and reporting as any switch); the membership is published only once the leave is armed,
and published again after every re-arm and before it runs out (sticky events last at most an hour,
legacy state carries an ``expires``). A refresh waits for a restart of the leave confirmed after
the refresh fell due: after a stall (a suspended host, a blocked event loop) the leave is restarted,
or re-armed, before the membership is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from nio.responses import GetOpenIDTokenError, GetOpenIDTokenResponse

from .._keepalive import (
    DeadMansSwitch,
    ExitPolicy,
    KeepAliveError,
    LostPolicy,
    SwitchEvent,
    SwitchEventKind,
    UnsupportedServerError,
)
from ..clock import wall_ms
from ..responses import DelayedEventsSupportError
from ..validation import (
    InvalidInput,
    check_content,
    check_room_id,
    coerce_policy,
    delay_to_ms,
    sticky_to_ms,
    switch_delay_ms,
)
from .ports import RtcClient
from .wire import (
    LEGACY_MEMBER_TYPE,
    STICKY_MEMBER_TYPE,
    LeaveCode,
    RtcMode,
    Slot,
    legacy_membership,
    legacy_state_key,
    sticky_leave,
    sticky_membership,
)

__all__ = ["RtcMembership", "RtcMembershipError"]

logger = logging.getLogger(__name__)

#: A membership is published again when this share of its life has passed.
_REFRESH_AT = 0.75
#: Waits between failed attempts to publish the membership.
_RETRY_FIRST, _RETRY_MAX = 1.0, 30.0
#: How often a refresh looks whether the leave has been restarted since it fell due.
_RESTART_POLL = 0.1


class RtcMembershipError(KeepAliveError):
    """The membership could not be published (the leave that was armed for it is cancelled)."""


@dataclass(frozen=True)
class _Options:
    """The checked arguments of :meth:`DelayedEventsMixin.rtc_membership`, and the bot."""

    user_id: str
    device_id: str
    room_id: str
    mode: RtcMode
    slot: Slot
    transports: list[dict[str, Any]]
    call_intent: str | None
    application_data: dict[str, Any]
    delay_ms: int
    sticky_ms: int
    expires_ms: int
    ignore_unverified_devices: bool
    priority: int


def check_options(  # noqa: PLR0913  # the public signature: one keyword per option
    room_id: str,
    *,
    user_id: str,
    device_id: str | None,
    mode: RtcMode | str,
    application: str,
    slot: str,
    transports: list[dict[str, Any]] | None,
    call_intent: str | None,
    application_data: dict[str, Any] | None,
    delay: timedelta | int,
    sticky_duration: timedelta | int,
    expires: timedelta | int,
    ignore_unverified_devices: bool,
    priority: int,
) -> _Options:
    """The options, checked before anything is sent; ``InvalidInput`` names the bad one."""
    if not device_id:
        raise InvalidInput("the client has no device id: log in (or restore_login) first")
    for name, part in (("application", application), ("slot", slot)):
        if not isinstance(part, str) or not part or "#" in part:
            raise InvalidInput(f"{name} must be a non-empty string without '#'")
    published = list(transports or [])
    for transport in published:
        if not isinstance(transport, dict) or not isinstance(transport.get("type"), str):
            raise InvalidInput("each transport must be a dict with a string 'type'")
    if call_intent is not None and not isinstance(call_intent, str):
        raise InvalidInput("call_intent must be a string or None")
    return _Options(
        user_id=user_id,
        device_id=device_id,
        room_id=check_room_id(room_id),
        mode=coerce_policy(RtcMode, mode, "mode"),
        slot=Slot(application, slot),
        transports=[check_content(t) for t in published],
        call_intent=call_intent,
        application_data=check_content(application_data or {}),
        delay_ms=switch_delay_ms(delay),  # the leave is a dead-man's switch
        sticky_ms=sticky_to_ms(sticky_duration),
        expires_ms=delay_to_ms(expires, "expires"),
        ignore_unverified_devices=ignore_unverified_devices,
        priority=priority,
    )


class RtcMembership:
    """The bot's membership of one room's MatrixRTC session (a call), from
    :meth:`DelayedEventsMixin.rtc_membership`. Read what it is; ``await leave()`` to leave early.
    """

    def __init__(self, client: RtcClient, options: _Options) -> None:
        self._client = client
        self._options = options
        self._mode = options.mode
        #: Unique per membership (MSC4143), random: a transport may use it as a pseudonym.
        self._member_id = uuid.uuid4().hex
        self._switch: DeadMansSwitch | None = None
        self._republish = asyncio.Event()
        self._maintainer: asyncio.Task[None] | None = None
        self._left = False
        #: Legacy mode: when the current membership began (wall ms), None before it is sent.
        self._created_ts: int | None = None
        self._published = 0

    # -- what it is ------------------------------------------------------------------------

    @property
    def room_id(self) -> str:
        return self._options.room_id

    @property
    def mode(self) -> RtcMode:
        """STICKY or LEGACY (AUTO is resolved when the membership is joined)."""
        return self._mode

    @property
    def slot_id(self) -> str:
        return self._options.slot.slot_id

    @property
    def member_id(self) -> str:
        """The member id: MSC4143's ``member.id`` in sticky mode; in legacy mode the
        ``membershipID`` (user and device), as Element Call writes it."""
        if self._mode is RtcMode.LEGACY:
            return f"{self._options.user_id}:{self._options.device_id}"
        return self._member_id

    @property
    def event_type(self) -> str:
        return LEGACY_MEMBER_TYPE if self._mode is RtcMode.LEGACY else STICKY_MEMBER_TYPE

    @property
    def state_key(self) -> str | None:
        """The membership's state key in legacy mode; None in sticky mode."""
        if self._mode is not RtcMode.LEGACY:
            return None
        return legacy_state_key(self._options.user_id, self._options.device_id, self._options.slot)

    @property
    def switch(self) -> DeadMansSwitch:
        """The keep-alive switch that holds the delayed leave."""
        if self._switch is None:
            raise KeepAliveError("the membership is not joined yet")
        return self._switch

    @property
    def joined(self) -> bool:
        """Published, not left, and its leave still kept by the keep-alive."""
        return (
            not self._left
            and self._published > 0
            and self._switch is not None
            and not self._switch.state.is_final
        )

    @property
    def publications(self) -> int:
        """How many times the membership was published (joined, refreshed, rejoined)."""
        return self._published

    def membership_content(self) -> dict[str, Any]:
        """The membership event's content as it is published now."""
        o = self._options
        if self._mode is RtcMode.LEGACY:
            expires = o.expires_ms
            if self._created_ts is not None:
                # A refresh: the same membership, living longer (counted from its start).
                expires += max(0, wall_ms() - self._created_ts)
            return legacy_membership(
                user_id=self._options.user_id,
                device_id=self._options.device_id,
                slot=o.slot,
                transports=o.transports,
                call_intent=o.call_intent,
                application_data=o.application_data,
                expires_ms=expires,
                created_ts=self._created_ts,
            )
        return sticky_membership(
            user_id=self._options.user_id,
            device_id=self._options.device_id,
            member_id=self._member_id,
            slot=o.slot,
            transports=o.transports,
            call_intent=o.call_intent,
            application_data=o.application_data,
        )

    def leave_content(self, code: LeaveCode = LeaveCode.DELAYED_LEAVE) -> dict[str, Any]:
        """The leave's content: empty in legacy mode (exactly ``{}``, as readers expect)."""
        if self._mode is RtcMode.LEGACY:
            return {}
        return sticky_leave(
            user_id=self._options.user_id,
            device_id=self._options.device_id,
            member_id=self._member_id,
            slot=self._options.slot,
            code=code,
        )

    async def openid_token(self) -> GetOpenIDTokenResponse | GetOpenIDTokenError:
        """An OpenID token of the bot's account, for the call's focus service (an SFU's
        authorisation service exchanges it for the SFU's own credentials)."""
        return await self._client.get_openid_token(self._options.user_id)

    # -- joining and leaving ---------------------------------------------------------------

    async def join(self) -> None:
        """Arm the leave, then publish the membership; raises if either cannot be done (and
        leaves nothing behind)."""
        if self._switch is not None:
            raise KeepAliveError("this membership was joined already")
        self._mode = await self._resolved_mode()
        o = self._options
        sticky = self._mode is RtcMode.STICKY
        self._switch = await self._client.keep_alive.add(
            o.room_id,
            self.event_type,
            self.leave_content(),
            delay=timedelta(milliseconds=o.delay_ms),
            state_key=self.state_key,
            on_exit=ExitPolicy.SEND,
            on_lost=LostPolicy.REARM,
            # A message switch is told apart by its key: one per membership, so a leftover of
            # a previous process (another member) is not adopted, and fires for its member. Not
            # the member id: the key stays readable beside the ciphertext in an encrypted room.
            key=f"rtc-{uuid.uuid4().hex}",
            ignore_unverified_devices=o.ignore_unverified_devices,
            priority=o.priority,
            sticky_duration=timedelta(milliseconds=o.sticky_ms) if sticky else None,
            # The legacy leave must be exactly `{}`: clients read any other content as a
            # membership. Its state key names this device, which is how the switch knows its
            # own leftover without an owner field in the content.
            exact_content=not sticky,
        )
        self._switch.on_event(self._on_switch_event)
        error = await self._publish()
        if error is not None:
            await self._switch.stop(ExitPolicy.CANCEL)
            raise RtcMembershipError(f"could not publish the membership: {error}")
        self._maintainer = asyncio.create_task(
            self._maintain(), name=f"nio-delayed rtc membership {o.room_id}"
        )

    async def leave(self) -> bool:
        """Leave the session now. In sticky mode a leave saying so (``leave``) is sent and the
        delayed one cancelled; in legacy mode the delayed leave is sent now. Returns False if
        no leave could be sent: the delayed one then fires when its delay runs out. Safe to
        call again."""
        if self._left or self._switch is None:
            return True
        self._left = True
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
        if self._mode is RtcMode.STICKY and not self._switch.state.is_final:
            sent = await self._client.send_event_bounded(
                self.room_id,
                STICKY_MEMBER_TYPE,
                self.leave_content(LeaveCode.LEAVE),
                ignore_unverified_devices=self._options.ignore_unverified_devices,
                sticky_duration=timedelta(milliseconds=self._options.sticky_ms),
            )
            if isinstance(sent, str):
                # Left: the delayed leave, if it cannot be cancelled, only repeats it.
                await self._switch.stop(ExitPolicy.CANCEL)
                return True
            logger.warning("rtc: the leave could not be sent (%s); sending the delayed one", sent)
        return await self._switch.stop(ExitPolicy.SEND)

    async def __aenter__(self) -> RtcMembership:
        await self.join()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.leave()

    # -- keeping it ------------------------------------------------------------------------

    async def _resolved_mode(self) -> RtcMode:
        if self._mode is RtcMode.LEGACY:
            return RtcMode.LEGACY
        support = await self._client.delayed_events_support()
        if isinstance(support, DelayedEventsSupportError):
            raise KeepAliveError(f"could not learn what the server supports: {support}", support)
        if support.sticky:
            return RtcMode.STICKY
        if self._mode is RtcMode.STICKY:
            raise UnsupportedServerError(
                "sticky mode needs sticky events (MSC4354), which the server does not "
                "advertise: nothing was sent (mode=RtcMode.LEGACY works on any server with "
                "delayed events)"
            )
        return RtcMode.LEGACY

    def _on_switch_event(self, event: SwitchEvent) -> None:
        if event.kind is SwitchEventKind.REARMED:
            # The old leave was sent (the bot was unreachable for longer than the delay): the
            # others saw it leave, so it joins again, now that a new leave is armed.
            self._created_ts = None
            self._republish.set()

    def _refresh_in(self) -> float:
        life = self._options.expires_ms if self._mode is RtcMode.LEGACY else self._options.sticky_ms
        return life * _REFRESH_AT / 1000

    async def _maintain(self) -> None:
        switch = self.switch
        retry = _RETRY_FIRST
        while not switch.state.is_final:
            if not self._republish.is_set():
                try:
                    await asyncio.wait_for(self._republish.wait(), self._refresh_in())
                except asyncio.TimeoutError:
                    if not await self._leave_restarted(switch):
                        return
            self._republish.clear()
            error = await self._publish()
            if error is None:
                retry = _RETRY_FIRST
                continue
            logger.warning("rtc: publishing the membership failed (will retry): %s", error)
            await asyncio.sleep(retry)
            retry = min(retry * 2, _RETRY_MAX)
            self._republish.set()

    async def _leave_restarted(self, switch: DeadMansSwitch) -> bool:
        """Wait for a restart (or re-arm) of the leave confirmed from now on: a membership is
        never refreshed without a leave that outlives it. False once the switch has ended."""
        before = _kept(switch)
        while _kept(switch) == before:
            if switch.state.is_final:
                return False
            await asyncio.sleep(_RESTART_POLL)
        return True

    async def _publish(self) -> str | None:
        """Publish the membership; the error, or None."""
        content = self.membership_content()
        sent = await self._client.send_event_bounded(
            self.room_id,
            self.event_type,
            content,
            self.state_key,
            ignore_unverified_devices=self._options.ignore_unverified_devices,
            sticky_duration=(
                timedelta(milliseconds=self._options.sticky_ms)
                if self._mode is RtcMode.STICKY
                else None
            ),
        )
        if not isinstance(sent, str):
            return str(sent)
        if self._mode is RtcMode.LEGACY and self._created_ts is None:
            self._created_ts = wall_ms()
        self._published += 1
        return None

    def __repr__(self) -> str:
        return (
            f"RtcMembership({self.room_id}, {self.slot_id}, mode={self._mode.value}, "
            f"joined={self.joined})"
        )


def _kept(switch: DeadMansSwitch) -> int:
    stats = switch.stats
    return stats.restarts_ok + stats.rearms
