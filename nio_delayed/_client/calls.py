"""The delayed-events calls of the client, each over the one request path (:func:`.call`).

Each says only what is its own: what it checks, which requests it builds, how it reads the
answers. Nothing delayed is ever sent to a server that does not advertise the feature: such a
server would send the event at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ..delay_id import DelayId
from ..errors import ErrorInfo, ErrorKind, is_unrecognized
from ..models import (
    DelayedEvent,
    DelayedEventStatus,
    parse_delayed_event,
    parse_delayed_events_page,
)
from ..request_builders import (
    DelayedEventAction,
    HttpRequest,
    event_request,
    list_request,
    lookup_request,
    msc4486_list_request,
    schedule_request,
    state_event_request,
    update_request,
)
from ..responses import (
    DelayedEventError,
    DelayedEventsListError,
    DelayedEventsListResponse,
    GetDelayedEventError,
    GetDelayedEventResponse,
    RoomPutStateDelayedError,
    RoomPutStateDelayedResponse,
    RoomSendDelayedError,
    RoomSendDelayedResponse,
    UpdateDelayedEventError,
    UpdateDelayedEventResponse,
)
from ..support import Dialect, Listing, ManagementForm
from ..transport import RequestPolicy
from ..validation import (
    InvalidInput,
    check_delay_id,
    check_event,
    check_event_type,
    check_room_id,
    check_state_key,
    check_txn_id,
    delay_to_ms,
    sticky_to_ms,
)
from .encryption import EncryptionLayer
from .negotiation import Negotiation, Server
from .request_path import RequestPath, call
from .state import ClientState

__all__ = ["DelayedCalls", "ListFilter"]

# Listing stops after this many pages: a server that never ends its pagination is broken.
_MAX_PAGES = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class ListFilter:
    """Which delayed events a listing asks for; ``None`` matches any. ``from_ts`` and
    ``to_ts`` bound, both included, when the server was to send an event (Unix ms): its timer's
    start plus its delay, whatever became of it, as MSC4486's ``from_ts`` and ``to_ts``."""

    status: DelayedEventStatus | None = None
    room_id: str | None = None
    event_type: str | None = None
    from_ts: int | None = None
    to_ts: int | None = None

    @classmethod
    def checked(
        cls,
        status: object,
        room_id: object,
        event_type: object,
        due_from: object = None,
        due_until: object = None,
    ) -> ListFilter:
        if status is not None and not isinstance(status, (str, DelayedEventStatus)):
            raise InvalidInput(f"status must be a DelayedEventStatus, not {type(status).__name__}")
        try:
            wanted = None if status is None else DelayedEventStatus(status)
        except ValueError:
            known = ", ".join(s.value for s in DelayedEventStatus)
            raise InvalidInput(f"status must be one of {known}, got {status!r}") from None
        # Send times are whole milliseconds: the first one at or after due_from, the last one
        # at or before due_until.
        from_ts = None if due_from is None else _unix_ms(due_from, "due_from", round_up=True)
        to_ts = None if due_until is None else _unix_ms(due_until, "due_until", round_up=False)
        if from_ts is not None and to_ts is not None and from_ts > to_ts:
            raise InvalidInput("due_from is after due_until: no delayed event could match")
        return cls(
            wanted,
            None if room_id is None else check_room_id(room_id),
            None if event_type is None else check_event_type(event_type),
            from_ts,
            to_ts,
        )

    def matches(self, event: DelayedEvent) -> bool:
        return (
            self.status in (None, event.status)
            and self.room_id in (None, event.room_id)
            and self.event_type in (None, event.type)
            and self._in_range(event)
        )

    def _in_range(self, event: DelayedEvent) -> bool:
        if self.from_ts is None and self.to_ts is None:
            return True
        if event.since_ts is None or event.delay_ms is None:
            return False  # the server did not say when it was to be sent: not shown in range
        send_ts = event.since_ts + event.delay_ms
        return (self.from_ts is None or self.from_ts <= send_ts) and (
            self.to_ts is None or send_ts <= self.to_ts
        )


def _unix_ms(moment: object, name: str, *, round_up: bool) -> int:
    """``moment`` (an aware datetime) in whole Unix milliseconds."""
    if not isinstance(moment, datetime):
        raise InvalidInput(f"{name} must be a datetime.datetime, not {type(moment).__name__}")
    if moment.utcoffset() is None:
        # A naive datetime names no moment: local time or UTC would be a guess.
        raise InvalidInput(
            f"{name} must be an aware datetime (with a tzinfo, like datetime.now(timezone.utc))"
        )
    since_epoch = moment - _EPOCH
    ms = -(-since_epoch // _MS) if round_up else since_epoch // _MS
    if ms < 0:
        raise InvalidInput(f"{name} must not be before 1970, got {moment.isoformat()}")
    return ms


async def _no_gate() -> None:
    """Calls that send nothing delayed need no support from the server."""


class DelayedCalls:
    def __init__(
        self,
        state: ClientState,
        path: RequestPath,
        negotiation: Negotiation,
        encryption: EncryptionLayer,
    ) -> None:
        self._state = state
        self._path = path
        self._negotiation = negotiation
        self._encryption = encryption

    # -- scheduling ----------------------------------------------------------------------

    async def room_send_delayed(
        self,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        delay: timedelta | int,
        tx_id: str | None,
        ignore_unverified_devices: bool,
        policy: RequestPolicy | None,
        *,
        sticky_duration: timedelta | int | None = None,
    ) -> RoomSendDelayedResponse | RoomSendDelayedError:
        def check() -> tuple[str, str, dict[str, Any], int, str, int | None]:
            room, etype, checked, _ = check_event(room_id, event_type, content)
            txn = check_txn_id(tx_id) if tx_id is not None else str(uuid.uuid4())
            sticky_ms = None if sticky_duration is None else sticky_to_ms(sticky_duration)
            return room, etype, checked, delay_to_ms(delay), txn, sticky_ms

        async def act(
            args: tuple[str, str, dict[str, Any], int, str, int | None], server: Server
        ) -> RoomSendDelayedResponse | ErrorInfo:
            room, etype, checked, delay_ms, txn, sticky_ms = args
            if sticky_ms is not None and not server.sticky:
                # A server without MSC4354 would send it as an ordinary, non-sticky event.
                return ErrorInfo(
                    ErrorKind.UNSUPPORTED,
                    "nothing was sent: the server does not advertise sticky events (MSC4354)",
                )
            message = await self._encryption.message_for(
                room, etype, checked, ignore_unverified_devices, policy
            )
            if isinstance(message, ErrorInfo):
                return message
            sent_type, sent_content = message
            delay_id = await self._schedule(
                server,
                room,
                sent_type,
                sent_content,
                delay_ms,
                txn_id=txn,
                state_key=None,
                policy=policy,
                sticky_duration_ms=sticky_ms,
            )
            if isinstance(delay_id, ErrorInfo):
                return delay_id
            return RoomSendDelayedResponse(
                delay_id,
                room,
                etype,
                delay_ms,
                tx_id=txn,
                encrypted=sent_type != etype,
                sticky_duration_ms=sticky_ms,
            )

        return await call(RoomSendDelayedError, check, self._negotiation.require, act)

    async def room_put_state_delayed(
        self,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        delay: timedelta | int,
        state_key: str,
        policy: RequestPolicy | None,
    ) -> RoomPutStateDelayedResponse | RoomPutStateDelayedError:
        def check() -> tuple[str, str, dict[str, Any], str, int]:
            room, etype, checked, _ = check_event(room_id, event_type, content)
            # A state event needs a state key: None is refused.
            return room, etype, checked, check_state_key(state_key), delay_to_ms(delay)

        async def act(
            args: tuple[str, str, dict[str, Any], str, int], server: Server
        ) -> RoomPutStateDelayedResponse | ErrorInfo:
            room, etype, checked, key, delay_ms = args
            delay_id = await self._schedule(
                server,
                room,
                etype,
                checked,
                delay_ms,
                txn_id=str(uuid.uuid4()),
                state_key=key,
                policy=policy,
            )
            if isinstance(delay_id, ErrorInfo):
                return delay_id
            return RoomPutStateDelayedResponse(delay_id, room, etype, delay_ms, state_key=key)

        return await call(RoomPutStateDelayedError, check, self._negotiation.require, act)

    async def _schedule(  # noqa: PLR0913  # one keyword per part of the request
        self,
        server: Server,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        delay_ms: int,
        *,
        txn_id: str,
        state_key: str | None,
        policy: RequestPolicy | None,
        sticky_duration_ms: int | None = None,
    ) -> DelayId | ErrorInfo:
        if server.max_delay_ms is not None and delay_ms > server.max_delay_ms:
            return ErrorInfo(
                ErrorKind.DELAY_TOO_LARGE,
                f"a delay of {delay_ms} ms is above the server's maximum of "
                f"{server.max_delay_ms} ms; nothing was sent",
                max_delay_ms=server.max_delay_ms,
            )
        request = schedule_request(
            server.dialect,
            room_id,
            event_type,
            content,
            delay_ms,
            txn_id=txn_id,
            state_key=state_key,
            sticky_duration_ms=sticky_duration_ms,
        )
        result = await self._path.parsed(request, _delay_id_of, policy)
        if (
            isinstance(result, ErrorInfo)
            and result.kind is ErrorKind.DELAY_TOO_LARGE
            and result.max_delay_ms is not None
        ):
            self._negotiation.learn_max_delay(result.max_delay_ms)
        return result

    # -- management ----------------------------------------------------------------------

    async def update(
        self, delay_id: str, action: DelayedEventAction, policy: RequestPolicy | None
    ) -> UpdateDelayedEventResponse | UpdateDelayedEventError:
        async def act(checked: str, server: Server) -> UpdateDelayedEventResponse | ErrorInfo:
            state = self._state
            form = state.management_form
            body = await self._path.json(
                update_request(server.dialect, checked, action, form), policy, secrets=(checked,)
            )
            if (
                isinstance(body, ErrorInfo)
                and form is ManagementForm.PATH
                and server.dialect is not Dialect.STABLE
                and is_unrecognized(body)
            ):
                # Older servers know only the body form; remember it for this client.
                state.management_form = ManagementForm.BODY
                body = await self._path.json(
                    update_request(server.dialect, checked, action, ManagementForm.BODY),
                    policy,
                    secrets=(checked,),
                )
            if isinstance(body, ErrorInfo):
                return body
            return UpdateDelayedEventResponse(DelayId(checked), action)

        return await call(
            UpdateDelayedEventError,
            lambda: check_delay_id(delay_id),
            self._negotiation.require,
            act,
        )

    # -- reading -------------------------------------------------------------------------

    async def get_delayed_event(
        self, delay_id: str, policy: RequestPolicy | None
    ) -> GetDelayedEventResponse | GetDelayedEventError:
        async def act(checked: str, server: Server) -> GetDelayedEventResponse | ErrorInfo:
            if self._state.lookup_supported:
                found = await self._path.parsed(
                    lookup_request(server.dialect, checked),
                    lambda body: GetDelayedEventResponse(parse_delayed_event(body)),
                    policy,
                    what="delayed event",
                    secrets=(checked,),
                )
                if not (isinstance(found, ErrorInfo) and is_unrecognized(found)):
                    return found
                self._state.lookup_supported = False  # found in the listing from now on
            events = await self._list(server, ListFilter(), policy)
            if isinstance(events, ErrorInfo):
                return events
            for event in events:
                if event.delay_id == checked:
                    return GetDelayedEventResponse(event)
            return ErrorInfo(
                ErrorKind.NOT_FOUND,
                "no delayed event with that delay_id (unknown, or already sent or cancelled)",
            )

        return await call(
            GetDelayedEventError,
            lambda: check_delay_id(delay_id),
            self._negotiation.require,
            act,
        )

    async def delayed_events(
        self,
        status: DelayedEventStatus | str | None,
        room_id: str | None,
        event_type: str | None,
        policy: RequestPolicy | None,
        *,
        due_from: datetime | None = None,
        due_until: datetime | None = None,
    ) -> DelayedEventsListResponse | DelayedEventsListError:
        async def act(wanted: ListFilter, server: Server) -> DelayedEventsListResponse | ErrorInfo:
            events = await self._list(server, wanted, policy)
            return events if isinstance(events, ErrorInfo) else DelayedEventsListResponse(events)

        return await call(
            DelayedEventsListError,
            lambda: ListFilter.checked(status, room_id, event_type, due_from, due_until),
            self._negotiation.require,
            act,
        )

    async def _list(
        self, server: Server, wanted: ListFilter, policy: RequestPolicy | None
    ) -> list[DelayedEvent] | ErrorInfo:
        """Every page. MSC4486 filters on the server; the filter is applied here as well, for
        the older listing (which has none) and for servers that ignore a parameter."""
        events: list[DelayedEvent] = []
        token: str | None = None
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            page = await self._path.parsed(
                _page_request(server, wanted, token),
                parse_delayed_events_page,
                policy,
                what="listing",
            )
            if isinstance(page, ErrorInfo):
                return _no_listing(page) if server.listing is Listing.MSC4140 else page
            found, token = page
            events.extend(event for event in found if wanted.matches(event))
            if token is None:
                return events
            if token in seen:
                return ErrorInfo(ErrorKind.SERVER_ERROR, "the listing repeats a pagination token")
            seen.add(token)
        return ErrorInfo(
            ErrorKind.SERVER_ERROR, f"the listing did not end after {_MAX_PAGES} pages"
        )

    # -- ordinary events -------------------------------------------------------------------

    async def send_event_bounded(
        self,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None,
        ignore_unverified_devices: bool,
        policy: RequestPolicy | None,
        *,
        sticky_duration: timedelta | int | None = None,
    ) -> str | DelayedEventError:
        def check() -> tuple[str, str, dict[str, Any], str | None, int | None]:
            room, etype, checked, key = check_event(room_id, event_type, content, state_key)
            if sticky_duration is not None and key is not None:
                raise InvalidInput("sticky_duration is for messages; this is a state event")
            sticky_ms = None if sticky_duration is None else sticky_to_ms(sticky_duration)
            return room, etype, checked, key, sticky_ms

        async def gate() -> Server | ErrorInfo | None:
            # Only a sticky event needs to know the server: a server without MSC4354 would
            # send it as an ordinary, non-sticky event.
            return None if sticky_duration is None else await self._negotiation.require()

        async def act(
            args: tuple[str, str, dict[str, Any], str | None, int | None], server: Server | None
        ) -> str | ErrorInfo:
            room, etype, checked, key, sticky_ms = args
            if sticky_ms is not None and not (server is not None and server.sticky):
                return ErrorInfo(
                    ErrorKind.UNSUPPORTED,
                    "nothing was sent: the server does not advertise sticky events (MSC4354)",
                )
            if key is None:
                message = await self._encryption.message_for(
                    room, etype, checked, ignore_unverified_devices, policy
                )
                if isinstance(message, ErrorInfo):
                    return message
                etype, checked = message
            request = event_request(
                room,
                etype,
                checked,
                txn_id=str(uuid.uuid4()),
                state_key=key,
                sticky_duration_ms=sticky_ms,
            )
            return await self._path.parsed(request, _event_id_of, policy)

        return await call(DelayedEventError, check, gate, act)

    async def current_state_event(
        self, room_id: str, event_type: str, state_key: str, policy: RequestPolicy | None
    ) -> dict[str, Any] | DelayedEventError:
        async def act(args: tuple[str, str, str], _: None) -> dict[str, Any] | ErrorInfo:
            return await self._path.json(state_event_request(*args), policy)

        return await call(
            DelayedEventError,
            lambda: (
                check_room_id(room_id),
                check_event_type(event_type),
                check_state_key(state_key),
            ),
            _no_gate,
            act,
        )


def _page_request(server: Server, wanted: ListFilter, token: str | None) -> HttpRequest:
    if server.listing is Listing.MSC4140:
        return list_request(server.dialect, token)
    return msc4486_list_request(
        stable=server.listing is Listing.MSC4486,
        from_token=token,
        status=None if wanted.status is None else wanted.status.value,
        room_id=wanted.room_id,
        event_type=wanted.event_type,
        from_ts=wanted.from_ts,
        to_ts=wanted.to_ts,
    )


def _no_listing(info: ErrorInfo) -> ErrorInfo:
    if not is_unrecognized(info):
        return info
    return ErrorInfo(
        ErrorKind.UNSUPPORTED,
        "the server lists no delayed events: it advertises no MSC4486 listing and has not the "
        "older MSC4140 one",
        info.errcode,
        info.http_status,
    )


def _delay_id_of(body: dict[str, Any]) -> DelayId | ErrorInfo:
    delay_id = body.get("delay_id")
    if isinstance(delay_id, str) and delay_id:
        try:
            return DelayId(check_delay_id(delay_id))
        except InvalidInput as exc:
            # It could be neither restarted nor cancelled: the event would fire regardless.
            return ErrorInfo(
                ErrorKind.SERVER_ERROR,
                f"the server's delay_id is not one that can be managed ({exc}); the event is "
                "scheduled all the same",
                http_status=200,
            )
    if "event_id" in body:
        return ErrorInfo(
            ErrorKind.SENT_IMMEDIATELY,
            "the server sent the event at once instead of scheduling it (it ignored the "
            f"delay); event_id {body.get('event_id')!r}",
            http_status=200,
        )
    return ErrorInfo(ErrorKind.SERVER_ERROR, "the server's answer has no delay_id", http_status=200)


def _event_id_of(body: dict[str, Any]) -> str | ErrorInfo:
    event_id = body.get("event_id")
    if not isinstance(event_id, str):
        return ErrorInfo(ErrorKind.SERVER_ERROR, "the answer has no event_id", http_status=200)
    return event_id
