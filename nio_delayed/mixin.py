"""The delayed-events API for ``nio.AsyncClient``: :class:`DelayedEventsMixin`.

Each method returns a typed ``...Response`` or a ``...Error`` (nio style) and never raises for
server, network or input problems. Nothing delayed is ever sent to a server that does not
advertise the feature: such a server would send the event at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import aiohttp
from aiohttp_socks import ProxyConnector
from nio.client.async_client import AsyncClient
from nio.exceptions import (
    EncryptionError,
    GroupEncryptionError,
    LocalProtocolError,
    OlmTrustError,
)
from nio.responses import Response, SyncResponse

from ._keepalive import DeadMansSwitch, KeepAliveManager
from .delay_id import DelayId
from .errors import ErrorInfo, ErrorKind, classify_error, is_unrecognized
from .models import DelayedEvent, MalformedAnswer, parse_delayed_event, parse_delayed_events_page
from .request_builders import (
    DelayedEventAction,
    HttpRequest,
    capabilities_request,
    event_request,
    list_request,
    lookup_request,
    probe_request,
    schedule_request,
    state_event_request,
    update_request,
    versions_request,
)
from .responses import (
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
from .support import (
    Dialect,
    Limits,
    ManagementForm,
    parse_capabilities,
    parse_versions,
    probe_says_unstable_endpoint,
)
from .transport import HttpAnswer, NoAnswer, RequestPolicy, send_with_retries
from .validation import (
    InvalidInput,
    check_delay_id,
    check_event,
    check_event_type,
    check_room_id,
    check_state_key,
    check_txn_id,
    delay_to_ms,
)
from .wire import SWITCH_KEY_FIELD

__all__ = ["DelayedAsyncClient", "DelayedEventsMixin"]

logger = logging.getLogger("nio_delayed")

_NO_E2E = (
    "{} is encrypted and this client cannot encrypt (install nio-delayed[e2e] and give the "
    "client a store_path); nothing was sent: no plaintext into an encrypted room"
)
# How long a room the client has not synced is taken to be unencrypted before asking again.
# Encryption, once on, stays on: that answer is kept for good.
_UNENCRYPTED_TTL = 300.0
# Listing stops after this many pages: a server that never ends its pagination is broken.
_MAX_PAGES = 1000

if TYPE_CHECKING:
    _Base = AsyncClient
else:
    _Base = object


@dataclass
class _Negotiated:
    """What one client learned about its server."""

    support: DelayedEventsSupportResponse | None = None
    management_form: ManagementForm = ManagementForm.PATH
    lookup_supported: bool = True
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Rooms the client has not synced, by what the server said of their encryption: True for
    #: good, or the monotonic time an "unencrypted" answer was given.
    encryption: dict[str, bool | float] = field(default_factory=dict)


class DelayedEventsMixin(_Base):
    """Delayed events (MSC4140) for an ``AsyncClient``. Put it first in the bases::

        class MyClient(DelayedEventsMixin, AsyncClient): ...

    ``delayed_events_policy`` bounds every call (time-out per attempt, attempts, longest
    server-requested wait); each method also takes ``policy=`` for one call.
    """

    delayed_events_policy: RequestPolicy = RequestPolicy()

    # -- support -------------------------------------------------------------------------

    async def delayed_events_support(
        self, refresh: bool = False
    ) -> DelayedEventsSupportResponse | DelayedEventsSupportError:
        """Whether and how the server supports delayed events; cached per client.

        ``refresh=True`` asks the server again (after a server upgrade, say).
        """
        state = self._negotiated
        if state.support is not None and not refresh:
            return state.support  # the common case, without the lock
        async with state.lock:
            if state.support is not None and not refresh:
                return state.support
            result = await self._negotiate()
            if isinstance(result, DelayedEventsSupportResponse):
                state.support = result
                state.management_form = ManagementForm.PATH
                state.lookup_supported = True
                logger.info(
                    "delayed events on %s: %s",
                    self.homeserver,
                    f"dialect {result.dialect.value}, max delay {result.max_delay_ms} ms, "
                    f"max scheduled {result.max_scheduled}"
                    if result.dialect
                    else f"unsupported ({result.reason})",
                )
            return result

    async def _negotiate(self) -> DelayedEventsSupportResponse | DelayedEventsSupportError:
        versions = await self._delayed_call(versions_request())
        if isinstance(versions, ErrorInfo):
            return DelayedEventsSupportError.from_info(versions)
        advertised = parse_versions(versions)
        limits, stable_capability = Limits(present=False), False
        capabilities = await self._delayed_call(capabilities_request())
        if isinstance(capabilities, ErrorInfo):
            if _transient(capabilities):
                return DelayedEventsSupportError.from_info(capabilities)
        else:
            limits, stable_capability = parse_capabilities(capabilities)

        def unsupported(reason: str) -> DelayedEventsSupportResponse:
            return DelayedEventsSupportResponse(supported=False, reason=reason)

        if limits.disabled:
            return unsupported("the server has delayed events turned off (max_delay_ms is 0)")
        if advertised.stable or stable_capability:
            dialect = Dialect.STABLE
        elif advertised.unstable:
            probe = await self._delayed_call(probe_request(f"nio-delayed-probe-{uuid.uuid4()}"))
            if isinstance(probe, ErrorInfo) and _transient(probe):
                return DelayedEventsSupportError.from_info(probe)
            status, errcode = (
                (probe.http_status or 0, probe.errcode)
                if isinstance(probe, ErrorInfo)
                else (200, None)
            )
            dialect = (
                Dialect.UNSTABLE
                if probe_says_unstable_endpoint(status, errcode)
                else Dialect.LEGACY
            )
        else:
            return unsupported("the server does not advertise delayed events (MSC4140)")
        return DelayedEventsSupportResponse(
            supported=True,
            dialect=dialect,
            max_delay_ms=limits.max_delay_ms,
            max_scheduled=limits.max_scheduled,
        )

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
    ) -> RoomSendDelayedResponse | RoomSendDelayedError:
        """Schedule a message event to be sent after ``delay`` (a timedelta or milliseconds).

        ``tx_id`` makes a retry safe: the same ``tx_id`` gives back the same ``delay_id``.
        Into an encrypted room the message is encrypted as ``room_send`` would (members loaded,
        the group session shared first), then scheduled; ``ignore_unverified_devices`` is
        ``room_send``'s. Members who join after that cannot decrypt it.
        """
        try:
            room_id, event_type, checked, _ = check_event(room_id, event_type, content)
            tx_id = check_txn_id(tx_id) if tx_id is not None else str(uuid.uuid4())
            delay_ms = delay_to_ms(delay)
        except InvalidInput as exc:
            return RoomSendDelayedError.local(ErrorKind.INVALID, str(exc))
        support = await self._require_support()
        if isinstance(support, ErrorInfo):
            return RoomSendDelayedError.from_info(support)
        message = await self._message_for(
            room_id, event_type, checked, ignore_unverified_devices, policy
        )
        if isinstance(message, ErrorInfo):
            return RoomSendDelayedError.from_info(message)
        sent_type, sent_content = message
        result = await self._schedule(
            room_id, sent_type, sent_content, delay_ms, tx_id, None, policy
        )
        if isinstance(result, ErrorInfo):
            return RoomSendDelayedError.from_info(result)
        return RoomSendDelayedResponse(
            result,
            room_id,
            event_type,
            delay_ms,
            tx_id=tx_id,
            encrypted=sent_type != event_type,
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
        try:
            room_id, event_type, checked, _ = check_event(room_id, event_type, content)
            state_key = check_state_key(state_key)  # a state event needs one; None is refused
            delay_ms = delay_to_ms(delay)
        except InvalidInput as exc:
            return RoomPutStateDelayedError.local(ErrorKind.INVALID, str(exc))
        txn_id = str(uuid.uuid4())
        result = await self._schedule(
            room_id, event_type, checked, delay_ms, txn_id, state_key, policy
        )
        if isinstance(result, ErrorInfo):
            return RoomPutStateDelayedError.from_info(result)
        return RoomPutStateDelayedResponse(
            result, room_id, event_type, delay_ms, state_key=state_key
        )

    async def _schedule(
        self,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        delay_ms: int,
        txn_id: str,
        state_key: str | None,
        policy: RequestPolicy | None,
    ) -> DelayId | ErrorInfo:
        support = await self._require_support()
        if isinstance(support, ErrorInfo):
            return support
        assert support.dialect is not None
        if support.max_delay_ms is not None and delay_ms > support.max_delay_ms:
            return ErrorInfo(
                ErrorKind.DELAY_TOO_LARGE,
                f"a delay of {delay_ms} ms is above the server's maximum of "
                f"{support.max_delay_ms} ms; nothing was sent",
                max_delay_ms=support.max_delay_ms,
            )
        request = schedule_request(
            support.dialect,
            room_id,
            event_type,
            content,
            delay_ms,
            txn_id=txn_id,
            state_key=state_key,
        )
        body = await self._delayed_call(request, policy)
        if isinstance(body, ErrorInfo):
            if body.kind is ErrorKind.DELAY_TOO_LARGE and body.max_delay_ms is not None:
                # Older servers publish their maximum only here: remember it.
                self._negotiated.support = replace(support, max_delay_ms=body.max_delay_ms)
            return body
        delay_id = body.get("delay_id")
        if isinstance(delay_id, str) and delay_id:
            return DelayId(delay_id)
        if "event_id" in body:
            return ErrorInfo(
                ErrorKind.SENT_IMMEDIATELY,
                "the server sent the event at once instead of scheduling it (it ignored the "
                f"delay); event_id {body.get('event_id')!r}",
                http_status=200,
            )
        return ErrorInfo(
            ErrorKind.SERVER_ERROR, "the server's answer has no delay_id", http_status=200
        )

    # -- management ----------------------------------------------------------------------

    async def restart_delayed_event(
        self, delay_id: str, *, policy: RequestPolicy | None = None
    ) -> UpdateDelayedEventResponse | UpdateDelayedEventError:
        """Restart the timer: the server now sends it one full delay from now."""
        return await self._update_delayed_event(delay_id, DelayedEventAction.RESTART, policy)

    async def cancel_delayed_event(
        self, delay_id: str, *, policy: RequestPolicy | None = None
    ) -> UpdateDelayedEventResponse | UpdateDelayedEventError:
        """Cancel it: it is never sent."""
        return await self._update_delayed_event(delay_id, DelayedEventAction.CANCEL, policy)

    async def send_delayed_event_now(
        self, delay_id: str, *, policy: RequestPolicy | None = None
    ) -> UpdateDelayedEventResponse | UpdateDelayedEventError:
        """Send it now instead of at the end of its delay."""
        return await self._update_delayed_event(delay_id, DelayedEventAction.SEND, policy)

    async def _update_delayed_event(
        self, delay_id: str, action: DelayedEventAction, policy: RequestPolicy | None
    ) -> UpdateDelayedEventResponse | UpdateDelayedEventError:
        try:
            delay_id = check_delay_id(delay_id)
        except InvalidInput as exc:
            return UpdateDelayedEventError.local(ErrorKind.INVALID, str(exc))
        support = await self._require_support()
        if isinstance(support, ErrorInfo):
            return UpdateDelayedEventError.from_info(support)
        assert support.dialect is not None
        state = self._negotiated
        form = state.management_form
        body = await self._delayed_call(
            update_request(support.dialect, delay_id, action, form), policy
        )
        if (
            isinstance(body, ErrorInfo)
            and form is ManagementForm.PATH
            and support.dialect is not Dialect.STABLE
            and is_unrecognized(body)
        ):
            # Older servers know only the body form; remember it for this client.
            state.management_form = ManagementForm.BODY
            body = await self._delayed_call(
                update_request(support.dialect, delay_id, action, ManagementForm.BODY), policy
            )
        if isinstance(body, ErrorInfo):
            return UpdateDelayedEventError.from_info(body)
        return UpdateDelayedEventResponse(DelayId(delay_id), action)

    # -- reading -------------------------------------------------------------------------

    async def get_delayed_event(
        self, delay_id: str, *, policy: RequestPolicy | None = None
    ) -> GetDelayedEventResponse | GetDelayedEventError:
        """One of the user's delayed events. On servers without the single lookup, it is found
        in the listing. Synapse forgets sent and cancelled events: those answer ``NOT_FOUND``.
        """
        try:
            delay_id = check_delay_id(delay_id)
        except InvalidInput as exc:
            return GetDelayedEventError.local(ErrorKind.INVALID, str(exc))
        support = await self._require_support()
        if isinstance(support, ErrorInfo):
            return GetDelayedEventError.from_info(support)
        assert support.dialect is not None
        state = self._negotiated
        if state.lookup_supported:
            body = await self._delayed_call(lookup_request(support.dialect, delay_id), policy)
            if not (isinstance(body, ErrorInfo) and is_unrecognized(body)):
                if isinstance(body, ErrorInfo):
                    return GetDelayedEventError.from_info(body)
                try:
                    return GetDelayedEventResponse(parse_delayed_event(body))
                except MalformedAnswer as exc:
                    return GetDelayedEventError.local(
                        ErrorKind.SERVER_ERROR, f"malformed delayed event: {exc}"
                    )
            state.lookup_supported = False
        events = await self._list_delayed_events(support.dialect, policy)
        if isinstance(events, ErrorInfo):
            return GetDelayedEventError.from_info(events)
        for event in events:
            if event.delay_id == delay_id:
                return GetDelayedEventResponse(event)
        return GetDelayedEventError.local(
            ErrorKind.NOT_FOUND,
            "no delayed event with that delay_id (unknown, or already sent or cancelled)",
        )

    async def delayed_events(
        self, *, policy: RequestPolicy | None = None
    ) -> DelayedEventsListResponse | DelayedEventsListError:
        """All of the user's delayed events the server knows, following every page."""
        support = await self._require_support()
        if isinstance(support, ErrorInfo):
            return DelayedEventsListError.from_info(support)
        assert support.dialect is not None
        events = await self._list_delayed_events(support.dialect, policy)
        if isinstance(events, ErrorInfo):
            return DelayedEventsListError.from_info(events)
        return DelayedEventsListResponse(events)

    async def _list_delayed_events(
        self, dialect: Dialect, policy: RequestPolicy | None
    ) -> list[DelayedEvent] | ErrorInfo:
        events: list[DelayedEvent] = []
        token: str | None = None
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            body = await self._delayed_call(list_request(dialect, token), policy)
            if isinstance(body, ErrorInfo):
                return body
            try:
                page, token = parse_delayed_events_page(body)
            except MalformedAnswer as exc:
                return ErrorInfo(
                    ErrorKind.SERVER_ERROR, f"malformed listing: {exc}", http_status=200
                )
            events.extend(page)
            if token is None:
                return events
            if token in seen:
                return ErrorInfo(ErrorKind.SERVER_ERROR, "the listing repeats a pagination token")
            seen.add(token)
        return ErrorInfo(
            ErrorKind.SERVER_ERROR, f"the listing did not end after {_MAX_PAGES} pages"
        )

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
        try:
            room_id, event_type, checked, state_key = check_event(
                room_id, event_type, content, state_key
            )
        except InvalidInput as exc:
            return DelayedEventError.local(ErrorKind.INVALID, str(exc))
        if state_key is None:
            message = await self._message_for(
                room_id, event_type, checked, ignore_unverified_devices, policy
            )
            if isinstance(message, ErrorInfo):
                return DelayedEventError.from_info(message)
            event_type, checked = message
        request = event_request(
            room_id, event_type, checked, txn_id=str(uuid.uuid4()), state_key=state_key
        )
        body = await self._delayed_call(request, policy)
        if isinstance(body, ErrorInfo):
            return DelayedEventError.from_info(body)
        event_id = body.get("event_id")
        if not isinstance(event_id, str):
            return DelayedEventError.local(ErrorKind.SERVER_ERROR, "the answer has no event_id")
        return event_id

    # -- keep-alive ----------------------------------------------------------------------

    @property
    def keep_alive(self) -> KeepAliveManager:
        """This client's keep-alive manager, created on first use (started by its first switch).
        ``close()`` stops its switches by their exit policies."""
        manager = self.__dict__.get("_nio_delayed_keep_alive")
        if manager is None:
            manager = self.__dict__["_nio_delayed_keep_alive"] = KeepAliveManager(self)
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
        session = self.__dict__.pop("_nio_delayed_session", None)
        if session is not None:
            await session.close()
        await super().close()  # type: ignore[no-untyped-call]  # nio's close() is unannotated

    # -- encryption ----------------------------------------------------------------------

    async def _message_for(
        self,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        ignore_unverified_devices: bool,
        policy: RequestPolicy | None,
    ) -> tuple[str, dict[str, Any]] | ErrorInfo:
        """The (type, content) to send for a message: encrypted if the room is."""
        encrypted = await self._room_encrypted(room_id, policy)
        if isinstance(encrypted, ErrorInfo) or not encrypted:
            return encrypted if isinstance(encrypted, ErrorInfo) else (event_type, content)
        if self.olm is None:
            return ErrorInfo(ErrorKind.UNSUPPORTED, _NO_E2E.format(room_id))
        if room_id not in self.rooms:
            return ErrorInfo(
                ErrorKind.ENCRYPTION,
                f"{room_id} is encrypted and the client has not synced it yet (its members are "
                "unknown): sync first; nothing was sent",
            )
        bound = policy or self.delayed_events_policy
        try:
            # nio's own requests retry without end: bound the whole preparation.
            await asyncio.wait_for(
                self._share_room_key(room_id, ignore_unverified_devices),
                bound.timeout * bound.max_attempts,
            )
            sent_type, sent_content = self.encrypt(room_id, event_type, content)
            sent_content = dict(sent_content)
            if SWITCH_KEY_FIELD in content:
                # A switch's key stays readable beside the ciphertext, so that a restarted bot
                # knows its leftover (see KeepAliveManager.add); it names nothing secret.
                sent_content[SWITCH_KEY_FIELD] = content[SWITCH_KEY_FIELD]
        except asyncio.TimeoutError:
            return ErrorInfo(
                ErrorKind.NETWORK,
                f"sharing the room key of {room_id} timed out; nothing was sent",
            )
        except (OlmTrustError, EncryptionError, GroupEncryptionError, LocalProtocolError) as exc:
            hint = (
                " (pass ignore_unverified_devices=True to share with them anyway)"
                if isinstance(exc, OlmTrustError)
                else ""
            )
            return ErrorInfo(
                ErrorKind.ENCRYPTION,
                f"could not encrypt for {room_id}: {exc}{hint}; nothing was sent",
            )
        return sent_type, sent_content

    async def _share_room_key(self, room_id: str, ignore_unverified_devices: bool) -> None:
        """What nio's ``room_send`` does before it encrypts: load the members, query their
        keys, share the group session (or wait for a share under way)."""
        assert self.olm is not None
        if not self.rooms[room_id].members_synced:
            await self.joined_members(room_id)
        # Unlike room_send, also when the members were known: a client that syncs with sync()
        # rather than sync_forever() has nobody else to query new devices' keys.
        if self.should_query_keys:
            await self.keys_query()
        if self.olm.should_share_group_session(room_id):
            sharing = self.sharing_session.get(room_id)
            if sharing is not None:
                await sharing.wait()
            else:
                try:
                    await self.share_group_session(
                        room_id, ignore_unverified_devices=ignore_unverified_devices
                    )
                except asyncio.CancelledError:
                    # Cancelled (by our time-out) during its key claim, nio leaves its "sharing"
                    # marker behind, and every later send into the room would wait on it.
                    marker = self.sharing_session.pop(room_id, None)
                    if marker is not None:
                        marker.set()
                    raise

    async def _room_encrypted(self, room_id: str, policy: RequestPolicy | None) -> bool | ErrorInfo:
        """Whether the room is encrypted: from the sync, or, for a room the client has not
        synced, from the server (no plaintext goes into an encrypted room by accident)."""
        room = self.rooms.get(room_id)
        if room is not None:
            return bool(room.encrypted)
        known = self._negotiated.encryption.get(room_id)
        if known is True or (
            isinstance(known, float) and time.monotonic() - known < _UNENCRYPTED_TTL
        ):
            return known is True
        body = await self._delayed_call(
            state_event_request(room_id, "m.room.encryption", ""), policy
        )
        if isinstance(body, ErrorInfo):
            if body.kind is not ErrorKind.NOT_FOUND:
                return replace(
                    body,
                    message=f"could not learn whether {room_id} is encrypted: {body.message}; "
                    "nothing was sent",
                )
            self._negotiated.encryption[room_id] = time.monotonic()
            return False
        content = body.get("content")
        if not isinstance(content, dict) or not isinstance(content.get("algorithm"), str):
            return ErrorInfo(
                ErrorKind.SERVER_ERROR,
                f"could not learn whether {room_id} is encrypted: the answer is not a state "
                "event; nothing was sent",
                http_status=200,
            )
        self._negotiated.encryption[room_id] = True
        return True

    # -- watching the sync -----------------------------------------------------------------

    async def receive_response(self, response: Response) -> None:
        """nio's hook for every answer; sync answers are also shown to the keep-alive managers
        of this client (the state-overwrite guard)."""
        await super().receive_response(response)
        if isinstance(response, SyncResponse):
            for observer in tuple(self._sync_observers):
                observer(response)

    def add_sync_observer(self, callback: Callable[[SyncResponse], None]) -> None:
        """Call ``callback`` with every sync answer this client receives."""
        self._sync_observers.add(callback)

    def remove_sync_observer(self, callback: Callable[[SyncResponse], None]) -> None:
        self._sync_observers.discard(callback)

    @property
    def _sync_observers(self) -> set[Callable[[SyncResponse], None]]:
        observers = self.__dict__.get("_nio_delayed_sync_observers")
        if observers is None:
            observers = self.__dict__["_nio_delayed_sync_observers"] = set()
        return cast(set[Callable[[SyncResponse], None]], observers)

    async def current_state_event(
        self,
        room_id: str,
        event_type: str,
        state_key: str,
        *,
        policy: RequestPolicy | None = None,
    ) -> dict[str, Any] | DelayedEventError:
        """The room's current state event at (type, state key), whole: sender included."""
        try:
            room_id = check_room_id(room_id)
            event_type = check_event_type(event_type)
            state_key = check_state_key(state_key)
        except InvalidInput as exc:
            return DelayedEventError.local(ErrorKind.INVALID, str(exc))
        body = await self._delayed_call(state_event_request(room_id, event_type, state_key), policy)
        if isinstance(body, ErrorInfo):
            return DelayedEventError.from_info(body)
        return body

    # -- plumbing ------------------------------------------------------------------------

    @property
    def _negotiated(self) -> _Negotiated:
        # Created on first use, so the mixin needs no __init__ of its own.
        state = self.__dict__.get("_nio_delayed_negotiated")
        if state is None:
            state = self.__dict__["_nio_delayed_negotiated"] = _Negotiated()
        return cast(_Negotiated, state)

    async def _require_support(self) -> DelayedEventsSupportResponse | ErrorInfo:
        support = await self.delayed_events_support()
        if isinstance(support, DelayedEventsSupportError):
            return ErrorInfo(
                support.kind,
                f"could not learn whether the server supports delayed events: {support.message}",
                support.status_code,
                support.http_status,
                support.retry_after_ms,
            )
        if not support.supported:
            return ErrorInfo(ErrorKind.UNSUPPORTED, f"nothing was sent: {support.reason}")
        return support

    async def _delayed_call(
        self, request: HttpRequest, policy: RequestPolicy | None = None
    ) -> dict[str, Any] | ErrorInfo:
        """Send ``request``; the JSON object it answered, or what went wrong."""
        outcome = await send_with_retries(
            self._delayed_http, request, policy or self.delayed_events_policy
        )
        if isinstance(outcome, NoAnswer):
            return ErrorInfo(ErrorKind.NETWORK, outcome.message)
        if not 200 <= outcome.status < 300:
            return classify_error(
                outcome.status, outcome.body, outcome.retry_after, now=time.time()
            )
        body = outcome.json()
        if not isinstance(body, dict):
            return ErrorInfo(
                ErrorKind.SERVER_ERROR,
                f"HTTP {outcome.status} with a body that is not a JSON object",
                http_status=outcome.status,
            )
        return body

    async def _delayed_http(self, request: HttpRequest, timeout: float) -> HttpAnswer:
        headers = {"Content-Type": "application/json"}
        # Management calls work without a token on Synapse, but with one the rate limit is per
        # user rather than per IP, and lookups need it anyway.
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        if self.config.custom_headers:
            headers.update(self.config.custom_headers)
        async with self._delayed_session().request(
            request.method,
            self.homeserver + request.path,
            data=_json_bytes(request.body),
            headers=headers,
            # nio's None means "default": verify certificates.
            ssl=True if self.ssl is None else self.ssl,
            timeout=_timeout(timeout),
        ) as response:
            return HttpAnswer(
                response.status, await response.read(), response.headers.get("Retry-After")
            )

    def _delayed_session(self) -> aiohttp.ClientSession:
        """Delayed-event calls have a session of their own (through nio's proxy, if any). A
        long-polling sync then never holds the connection a restart needs, and restarts skip
        the per-request tracing nio sets up on its session."""
        session = self.__dict__.get("_nio_delayed_session")
        if session is None or session.closed:
            connector = ProxyConnector.from_url(self.proxy) if self.proxy else None
            session = self.__dict__["_nio_delayed_session"] = aiohttp.ClientSession(
                connector=connector
            )
        return cast(aiohttp.ClientSession, session)


@functools.lru_cache(maxsize=256)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


def _json_bytes(body: dict[str, Any] | None) -> bytes | None:
    if not body:
        return None if body is None else b"{}"  # restarts: the common case
    return json.dumps(body, separators=(",", ":")).encode()


def _transient(info: ErrorInfo) -> bool:
    """No answer, or a server failure: ask again later rather than conclude anything."""
    return info.kind is ErrorKind.NETWORK or (info.http_status or 0) >= 500


class DelayedAsyncClient(DelayedEventsMixin, AsyncClient):
    """``nio.AsyncClient`` with delayed events."""
