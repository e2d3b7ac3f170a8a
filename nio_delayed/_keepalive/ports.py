"""What the keep-alive needs from a client: exactly these methods, nothing private.
:class:`nio_delayed.DelayedEventsMixin` provides them; a test may pass any other object that does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Protocol

from nio.responses import SyncResponse

from ..limits import ServerLimits
from ..responses import (
    DelayedEventError,
    DelayedEventsListError,
    DelayedEventsListResponse,
    DelayedEventsSupportError,
    DelayedEventsSupportResponse,
    GetDelayedEventError,
    GetDelayedEventResponse,
    RoomPutStateDelayedError,
    RoomPutStateDelayedResponse,
    RoomSendDelayedError,
    RoomSendDelayedResponse,
    UpdateDelayedEventError,
    UpdateDelayedEventResponse,
)
from ..transport import RequestPolicy

__all__ = ["KeepAliveClient", "SyncObserver"]

SyncObserver = Callable[[SyncResponse], None]


class KeepAliveClient(Protocol):
    """The client side of the keep-alive."""

    @property
    def user_id(self) -> str: ...

    #: The client's device (nio's ``AsyncClient.device_id``): the switches' default owner.
    @property
    def device_id(self) -> str | None: ...

    #: The server's rate limits as far as the bot's operator knows them.
    delayed_events_limits: ServerLimits

    async def delayed_events_support(
        self, refresh: bool = False
    ) -> DelayedEventsSupportResponse | DelayedEventsSupportError: ...

    async def delayed_events(
        self, *, policy: RequestPolicy | None = None
    ) -> DelayedEventsListResponse | DelayedEventsListError: ...

    async def get_delayed_event(
        self, delay_id: str, *, policy: RequestPolicy | None = None
    ) -> GetDelayedEventResponse | GetDelayedEventError: ...

    async def restart_delayed_event(
        self, delay_id: str, *, policy: RequestPolicy | None = None
    ) -> UpdateDelayedEventResponse | UpdateDelayedEventError: ...

    async def cancel_delayed_event(
        self, delay_id: str, *, policy: RequestPolicy | None = None
    ) -> UpdateDelayedEventResponse | UpdateDelayedEventError: ...

    async def send_delayed_event_now(
        self, delay_id: str, *, policy: RequestPolicy | None = None
    ) -> UpdateDelayedEventResponse | UpdateDelayedEventError: ...

    async def room_send_delayed(
        self,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        delay: timedelta | int,
        tx_id: str | None = None,
        *,
        ignore_unverified_devices: bool = False,
        policy: RequestPolicy | None = None,
        sticky_duration: timedelta | int | None = None,
    ) -> RoomSendDelayedResponse | RoomSendDelayedError: ...

    async def room_put_state_delayed(
        self,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        delay: timedelta | int,
        state_key: str = "",
        *,
        policy: RequestPolicy | None = None,
    ) -> RoomPutStateDelayedResponse | RoomPutStateDelayedError: ...

    async def send_event_bounded(
        self,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        *,
        ignore_unverified_devices: bool = False,
        policy: RequestPolicy | None = None,
    ) -> str | DelayedEventError: ...

    async def current_state_event(
        self,
        room_id: str,
        event_type: str,
        state_key: str,
        *,
        policy: RequestPolicy | None = None,
    ) -> dict[str, Any] | DelayedEventError: ...

    def add_sync_observer(self, callback: SyncObserver) -> None: ...

    def remove_sync_observer(self, callback: SyncObserver) -> None: ...
