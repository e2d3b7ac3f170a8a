"""The delayed-events API for ``nio.AsyncClient``: :class:`DelayedEventsMixin`.

Each method returns a typed ``...Response`` or a ``...Error`` (nio style) and never raises for
server, network or input problems. Nothing delayed is ever sent to a server that does not
advertise the feature: such a server would send the event at once.

This module assembles the client side from its parts (``nio_delayed._client``) and adds the
keep-alive; the calls themselves live in those parts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from nio.client.async_client import AsyncClient
from nio.responses import Response, SyncResponse

from ._client.calls import DelayedCalls
from ._client.encryption import EncryptionLayer
from ._client.negotiation import Negotiation
from ._client.request_path import RequestPath
from ._client.sent import FiredMarks, SentEvents
from ._client.session import AiohttpTransport, Transport
from ._client.state import ClientState, SyncObserver
from ._keepalive import DeadMansSwitch, KeepAliveManager
from .limits import ServerLimits
from .models import DelayedEventStatus
from .request_builders import DelayedEventAction
from .responses import (
    DelayedEventError,
    DelayedEventSentError,
    DelayedEventSentResponse,
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
from .transport import RequestPolicy
from .wire import OWNER_FIELD, SWITCH_KEY_FIELD

__all__ = ["DelayedAsyncClient", "DelayedEventsMixin"]

if TYPE_CHECKING:
    _Base = AsyncClient
else:
    _Base = object


@dataclass
class _Parts:
    """One client's side of delayed events, assembled on first use."""

    state: ClientState
    transport: Transport
    negotiation: Negotiation
    calls: DelayedCalls
    sent: SentEvents


class DelayedEventsMixin(_Base):
    """Delayed events (MSC4140) for an ``AsyncClient``. Put it first in the bases::

        class MyClient(DelayedEventsMixin, AsyncClient): ...

    ``delayed_events_policy`` bounds every call (time-out per attempt, attempts, longest
    server-requested wait); each method also takes ``policy=`` for one call.
    ``delayed_events_transport``, set before the first call, replaces the HTTP session of the
    delayed-event calls (tests): any object with ``send(request, timeout)`` and ``close()``.
    """

    delayed_events_policy: RequestPolicy = RequestPolicy()
    #: The server's rate limits as far as you know them (default: Synapse's defaults). The
    #: keep-alive plans its requests by them and learns tighter ones by itself; say so here if
    #: the server allows more, or exempts the bot (``ServerLimits.unlimited()``).
    delayed_events_limits: ServerLimits = ServerLimits()
    delayed_events_transport: Transport | None = None
    #: For :attr:`keep_alive`, set before its first use: the switches' owner (default: the
    #: device id) and the directory of the bot's record of its switches (see
    #: :class:`KeepAliveManager`'s ``owner`` and ``record_dir``).
    delayed_events_owner: str | None = None
    delayed_events_record_dir: str | os.PathLike[str] | None = None

    # -- support -------------------------------------------------------------------------

    async def delayed_events_support(
        self, refresh: bool = False
    ) -> DelayedEventsSupportResponse | DelayedEventsSupportError:
        """Whether and how the server supports delayed events (its dialect, limits and
        listing); cached per client.

        ``refresh=True`` asks the server again (after a server upgrade, say).
        """
        return await self._delayed.negotiation.support(refresh)

    # -- scheduling ----------------------------------------------------------------------

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
    ) -> RoomSendDelayedResponse | RoomSendDelayedError:
        """Schedule a message event to be sent after ``delay`` (a timedelta or milliseconds).

        ``tx_id`` makes a retry safe: the same ``tx_id`` gives back the same ``delay_id``.
        Into an encrypted room the message is encrypted as ``room_send`` would (members loaded,
        the group session shared first), then scheduled; ``ignore_unverified_devices`` is
        ``room_send``'s. Members who join after that cannot decrypt it.

        ``sticky_duration`` (at most one hour) makes the event sticky (MSC4354) for that long
        from when it is sent: clients are given it until then even if it scrolled out of their
        sync. A server that does not advertise sticky events answers ``UNSUPPORTED`` and is sent
        nothing.
        """
        return await self._delayed.calls.room_send_delayed(
            room_id,
            event_type,
            content,
            delay,
            tx_id,
            ignore_unverified_devices,
            policy,
            sticky_duration=sticky_duration,
        )

    async def room_put_state_delayed(
        self,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        delay: timedelta | int,
        state_key: str = "",
        *,
        policy: RequestPolicy | None = None,
    ) -> RoomPutStateDelayedResponse | RoomPutStateDelayedError:
        """Schedule a state event to be set after ``delay`` (a timedelta or milliseconds)."""
        return await self._delayed.calls.room_put_state_delayed(
            room_id, event_type, content, delay, state_key, policy
        )

    # -- management ----------------------------------------------------------------------

    async def restart_delayed_event(
        self, delay_id: str, *, policy: RequestPolicy | None = None
    ) -> UpdateDelayedEventResponse | UpdateDelayedEventError:
        """Restart the timer: the server now sends it one full delay from now."""
        return await self._delayed.calls.update(delay_id, DelayedEventAction.RESTART, policy)

    async def cancel_delayed_event(
        self, delay_id: str, *, policy: RequestPolicy | None = None
    ) -> UpdateDelayedEventResponse | UpdateDelayedEventError:
        """Cancel it: it is never sent."""
        return await self._delayed.calls.update(delay_id, DelayedEventAction.CANCEL, policy)

    async def send_delayed_event_now(
        self, delay_id: str, *, policy: RequestPolicy | None = None
    ) -> UpdateDelayedEventResponse | UpdateDelayedEventError:
        """Send it now instead of at the end of its delay."""
        return await self._delayed.calls.update(delay_id, DelayedEventAction.SEND, policy)

    # -- reading -------------------------------------------------------------------------

    async def get_delayed_event(
        self, delay_id: str, *, policy: RequestPolicy | None = None
    ) -> GetDelayedEventResponse | GetDelayedEventError:
        """One of the user's delayed events. On servers without the single lookup, it is found
        in the listing. Synapse forgets sent and cancelled events: those answer ``NOT_FOUND``.
        """
        return await self._delayed.calls.get_delayed_event(delay_id, policy)

    async def delayed_events(
        self,
        *,
        status: DelayedEventStatus | str | None = None,
        room_id: str | None = None,
        event_type: str | None = None,
        policy: RequestPolicy | None = None,
    ) -> DelayedEventsListResponse | DelayedEventsListError:
        """The user's delayed events the server knows, following every page: all of them, or
        those with this ``status`` (scheduled, sent, cancelled, failed), in this room, of this
        type. Servers keep finalised events for a while or (Synapse) not at all.

        Listing is MSC4486 where the server advertises it, else the older MSC4140 listing of
        released Synapse; a server with neither answers ``UNSUPPORTED``.
        """
        return await self._delayed.calls.delayed_events(status, room_id, event_type, policy)

    async def delayed_event_sent(
        self, delay_id: str, *, timeout: timedelta | None
    ) -> DelayedEventSentResponse | DelayedEventSentError:
        """Wait until this client's sync shows the event sent for ``delay_id`` (the sender's
        copy of a fired delayed event names it in ``unsigned``): the response has its
        ``event_id`` and the event. At once if a recent sync showed it already.

        Needs a sync loop running (``sync_forever``) and a server that marks sent delayed
        events (the merged MSC4140; Synapse 1.150 and later). A server may send an event up to
        30 s after its due time. After ``timeout`` (a ``timedelta``; ``None`` waits for ever) the
        error is ``NOT_SEEN``: look the event up then (``get_delayed_event``).
        """
        return await self._delayed.sent.wait(delay_id, timeout)

    # -- ordinary events -----------------------------------------------------------------

    async def send_event_bounded(
        self,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        *,
        ignore_unverified_devices: bool = False,
        policy: RequestPolicy | None = None,
    ) -> str | DelayedEventError:
        """Send an ordinary event now, with this library's bounded retries (nio's own
        ``room_send`` may retry without end). Returns the event id, or the error.

        Used for the keep-alive's "alive" event. A message into an encrypted room is encrypted
        (or refused, without end-to-end support).
        """
        return await self._delayed.calls.send_event_bounded(
            room_id, event_type, content, state_key, ignore_unverified_devices, policy
        )

    async def current_state_event(
        self,
        room_id: str,
        event_type: str,
        state_key: str,
        *,
        policy: RequestPolicy | None = None,
    ) -> dict[str, Any] | DelayedEventError:
        """The room's current state event at (type, state key), whole (its sender included),
        with bounded retries; ``NOT_FOUND`` when there is none."""
        return await self._delayed.calls.current_state_event(room_id, event_type, state_key, policy)

    # -- keep-alive ----------------------------------------------------------------------

    @property
    def keep_alive(self) -> KeepAliveManager:
        """This client's keep-alive manager, created on first use (started by its first switch).
        ``close()`` stops its switches by their exit policies."""
        manager = self.__dict__.get("_nio_delayed_keep_alive")
        if manager is None:
            manager = self.__dict__["_nio_delayed_keep_alive"] = KeepAliveManager(
                self, owner=self.delayed_events_owner, record_dir=self.delayed_events_record_dir
            )
        return cast(KeepAliveManager, manager)

    @contextlib.asynccontextmanager
    async def dead_mans_switch(
        self,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        *,
        delay: timedelta | int,
        state_key: str | None = None,
        **options: Any,
    ) -> AsyncIterator[DeadMansSwitch]:
        """One switch for the life of an ``async with`` block, kept by :attr:`keep_alive`::

            async with client.dead_mans_switch(room, "m.room.message", offline, delay=30_000):
                await client.sync_forever()

        Leaving the block stops it by its exit policy (``on_exit=``, default: send it now).
        Other options are those of :meth:`KeepAliveManager.add`.
        """
        switch = await self.keep_alive.add(
            room_id, event_type, content, delay=delay, state_key=state_key, **options
        )
        try:
            yield switch
        finally:
            await switch.stop()

    async def close(self) -> None:
        """Stop this client's switches by their exit policies, then close the HTTP sessions."""
        manager = self.__dict__.get("_nio_delayed_keep_alive")
        if manager is not None:
            await manager.close()
        parts = self.__dict__.get("_nio_delayed_parts")
        if parts is not None:
            # What was learned of the server stays; a later call opens a new session.
            await cast(_Parts, parts).transport.close()
        await super().close()  # type: ignore[no-untyped-call]  # nio's close() is unannotated

    # -- watching the sync -----------------------------------------------------------------

    def add_sync_observer(self, callback: SyncObserver) -> None:
        """Call ``callback`` with every sync answer this client receives (after nio has
        handled it)."""
        self._delayed.state.sync_observers.add(callback)

    def remove_sync_observer(self, callback: SyncObserver) -> None:
        """Stop calling ``callback``; no error if it was not added."""
        self._delayed.state.sync_observers.discard(callback)

    async def receive_response(self, response: Response) -> None:
        """nio's hook for every answer; sync answers are also shown to the sync observers of
        this client (the keep-alive's state-overwrite guard and fire watch) and to the calls
        waiting for a delayed event to be sent."""
        if not isinstance(response, SyncResponse):
            await super().receive_response(response)
            return
        marks = FiredMarks(response)  # nio's decryption drops them: put back after
        await super().receive_response(response)
        marks.restore()
        self._delayed.sent.on_sync(response)
        for observer in tuple(self._delayed.state.sync_observers):
            observer(response)

    # -- assembly ------------------------------------------------------------------------

    @property
    def _delayed(self) -> _Parts:
        # Created on first use, so the mixin needs no __init__ of its own.
        parts = self.__dict__.get("_nio_delayed_parts")
        if parts is None:
            parts = self.__dict__["_nio_delayed_parts"] = self._assemble()
        return cast(_Parts, parts)

    def _assemble(self) -> _Parts:
        state = ClientState()
        transport = self.delayed_events_transport or AiohttpTransport(self)
        path = RequestPath(
            transport, lambda: self.delayed_events_policy, lambda: (self.access_token,)
        )
        negotiation = Negotiation(state, path, lambda: self.homeserver)
        # A switch's key and owner stay readable beside the ciphertext, so that a restarted bot
        # knows its leftover (see KeepAliveManager.add); they name nothing secret.
        encryption = EncryptionLayer(
            self, state, path, kept_readable=(SWITCH_KEY_FIELD, OWNER_FIELD)
        )
        return _Parts(
            state,
            transport,
            negotiation,
            DelayedCalls(state, path, negotiation, encryption),
            SentEvents(lambda: self.user_id),
        )


class DelayedAsyncClient(DelayedEventsMixin, AsyncClient):
    """``nio.AsyncClient`` with delayed events."""
