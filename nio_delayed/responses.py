"""nio-style results: a typed ``...Response`` on success, a ``...Error`` (an nio ``ErrorResponse``)
otherwise. As in nio, ``status_code`` on an error is the Matrix ``errcode``; the HTTP status is
``http_status``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from nio.responses import ErrorResponse, Response

from .delay_id import DelayId
from .errors import ErrorInfo, ErrorKind
from .models import DelayedEvent, DelayedEventStatus
from .request_builders import DelayedEventAction
from .support import Dialect, Listing

__all__ = [
    "DelayedEventError",
    "DelayedEventSentError",
    "DelayedEventSentResponse",
    "DelayedEventsListError",
    "DelayedEventsListResponse",
    "DelayedEventsSupportError",
    "DelayedEventsSupportResponse",
    "GetDelayedEventError",
    "GetDelayedEventResponse",
    "RoomPutStateDelayedError",
    "RoomPutStateDelayedResponse",
    "RoomSendDelayedError",
    "RoomSendDelayedResponse",
    "UpdateDelayedEventError",
    "UpdateDelayedEventResponse",
]

_E = TypeVar("_E", bound="DelayedEventError")


@dataclass
class DelayedEventError(ErrorResponse):
    """Base of every error from this library. Branch on ``kind``."""

    kind: ErrorKind = ErrorKind.SERVER_ERROR
    http_status: int | None = None
    max_delay_ms: int | None = None
    #: With ``kind`` UNAUTHORIZED: the server asked for a "soft logout" (log in again to the
    #: same device to keep its keys).
    soft_logout: bool = False

    @property
    def errcode(self) -> str | None:
        return self.status_code

    @classmethod
    def from_info(cls: type[_E], info: ErrorInfo) -> _E:
        return cls(
            info.message,
            info.errcode,
            info.retry_after_ms,
            kind=info.kind,
            http_status=info.http_status,
            max_delay_ms=info.max_delay_ms,
            soft_logout=info.soft_logout,
        )

    @classmethod
    def local(cls: type[_E], kind: ErrorKind, message: str) -> _E:
        """An error found before (or instead of) sending anything."""
        return cls(message, kind=kind)

    def __str__(self) -> str:
        where = " ".join(
            part for part in (str(self.http_status or ""), self.status_code or "") if part
        )
        text = f"{type(self).__name__} [{self.kind.value}]"
        if where:
            text += f" {where}"
        text += f": {self.message}"
        if self.retry_after_ms is not None:
            text += f" (retry after {self.retry_after_ms} ms)"
        if self.max_delay_ms is not None:
            text += f" (server maximum {self.max_delay_ms} ms)"
        if self.soft_logout:
            text += " (soft logout)"
        return text


class DelayedEventsSupportError(DelayedEventError):
    """The server's support could not be determined (it did not answer, or answered nonsense)."""


class RoomSendDelayedError(DelayedEventError):
    """:meth:`~DelayedEventsMixin.room_send_delayed` failed: nothing is scheduled, unless ``kind``
    is ``NETWORK`` (the request may have acted)."""


class RoomPutStateDelayedError(DelayedEventError):
    """:meth:`~DelayedEventsMixin.room_put_state_delayed` failed: nothing is scheduled, unless
    ``kind`` is ``NETWORK`` (the request may have acted)."""


class UpdateDelayedEventError(DelayedEventError):
    """A restart, cancel or send-now failed."""


class GetDelayedEventError(DelayedEventError):
    """:meth:`~DelayedEventsMixin.get_delayed_event` failed (``NOT_FOUND``: no such event)."""


class DelayedEventsListError(DelayedEventError):
    """:meth:`~DelayedEventsMixin.delayed_events` failed."""


class DelayedEventSentError(DelayedEventError):
    """Waiting for a delayed event to be sent ended without seeing it (``NOT_SEEN``), or the
    arguments were wrong (``INVALID``)."""


@dataclass
class DelayedEventsSupportResponse(Response):
    """What the server offers. When ``supported`` is False, ``reason`` says why. ``listing``:
    where the server lists delayed events (MSC4486, or the older MSC4140 listing)."""

    supported: bool
    dialect: Dialect | None = None
    max_delay_ms: int | None = None
    max_scheduled: int | None = None
    reason: str = ""
    listing: Listing | None = None
    sticky: bool = False

    def __str__(self) -> str:
        if not self.supported or self.dialect is None:
            return f"delayed events unsupported: {self.reason}"
        listing = f", listing {self.listing.value}" if self.listing else ""
        return (
            f"delayed events supported: {self.dialect.value} dialect, max delay "
            f"{_limit(self.max_delay_ms, ' ms')}, max scheduled {_limit(self.max_scheduled)}"
            f"{listing}{', sticky' if self.sticky else ''}"
        )


def _limit(value: int | None, unit: str = "") -> str:
    return "not published" if value is None else f"{value}{unit}"


@dataclass
class _ScheduledResponse(Response):
    delay_id: DelayId
    room_id: str
    event_type: str
    delay_ms: int


@dataclass
class RoomSendDelayedResponse(_ScheduledResponse):
    """A delayed message was scheduled. Keep ``delay_id`` secret: it controls the event.
    ``encrypted``: it was encrypted for the room (it is scheduled as ``m.room.encrypted``).
    ``sticky_duration_ms``: how long it stays sticky once sent (MSC4354), or ``None``."""

    tx_id: str = ""
    encrypted: bool = False
    sticky_duration_ms: int | None = None


@dataclass
class RoomPutStateDelayedResponse(_ScheduledResponse):
    """A delayed state event was scheduled. Keep ``delay_id`` secret: it controls the event."""

    state_key: str = ""


@dataclass
class UpdateDelayedEventResponse(Response):
    """The server carried out ``action`` (restart, cancel or send) on the event ``delay_id``."""

    delay_id: DelayId
    action: DelayedEventAction


@dataclass
class DelayedEventSentResponse(Response):
    """A delayed event was sent: the client's sync showed it, marked with its ``delay_id``.
    ``event`` is the event's JSON as the sync gave it (decrypted, in an encrypted room; left
    out of the repr, as it holds the whole ``delay_id``)."""

    delay_id: DelayId
    room_id: str
    event_id: str
    event_type: str
    event: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class GetDelayedEventResponse(Response):
    """One delayed event, looked up by its ``delay_id``."""

    delayed_event: DelayedEvent


@dataclass
class DelayedEventsListResponse(Response):
    """The user's delayed events the server still knows (every page, in server order): all of
    them, or those that match the filters the listing was asked for."""

    delayed_events: list[DelayedEvent] = field(default_factory=list)

    @property
    def scheduled(self) -> list[DelayedEvent]:
        return [e for e in self.delayed_events if e.status is DelayedEventStatus.SCHEDULED]

    @property
    def finalised(self) -> list[DelayedEvent]:
        return [e for e in self.delayed_events if e.status is not DelayedEventStatus.SCHEDULED]
