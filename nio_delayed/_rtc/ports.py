"""What a MatrixRTC membership needs from a client: exactly these, nothing private.
:class:`nio_delayed.DelayedEventsMixin` on a ``nio.AsyncClient`` provides them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Protocol

from nio.responses import GetOpenIDTokenError, GetOpenIDTokenResponse

from .._keepalive import KeepAliveManager
from ..responses import DelayedEventError, DelayedEventsSupportError, DelayedEventsSupportResponse
from ..transport import RequestPolicy

__all__ = ["RtcClient"]


class RtcClient(Protocol):
    @property
    def keep_alive(self) -> KeepAliveManager: ...

    async def delayed_events_support(
        self, refresh: bool = False
    ) -> DelayedEventsSupportResponse | DelayedEventsSupportError: ...

    async def send_event_bounded(
        self,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        *,
        ignore_unverified_devices: bool = False,
        policy: RequestPolicy | None = None,
        sticky_duration: timedelta | int | None = None,
    ) -> str | DelayedEventError: ...

    async def get_openid_token(
        self, user_id: str
    ) -> GetOpenIDTokenResponse | GetOpenIDTokenError: ...
