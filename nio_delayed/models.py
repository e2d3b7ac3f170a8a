"""Typed delayed events, parsed from every field-name variant servers use (docs/protocol.md,
"Listing: MSC4486"); the ids in them are checked as a caller's would be, so that the library
can address every event it reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .delay_id import DelayId
from .errors import ErrorInfo, ErrorKind
from .validation import InvalidInput, check_delay_id, check_segment

__all__ = [
    "DelayedEvent",
    "DelayedEventStatus",
    "MalformedAnswer",
    "parse_delay_id",
    "parse_delayed_event",
    "parse_delayed_events_page",
    "parse_scheduled",
]


class MalformedAnswer(ValueError):
    """A server answer that does not have the shape the protocol gives it."""


class DelayedEventStatus(str, Enum):
    """Where a delayed event stands: still scheduled, or how it ended (sent, cancelled, or
    failed: the server could not send it when it fell due)."""

    SCHEDULED = "scheduled"
    SENT = "sent"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True)
class DelayedEvent:
    """A delayed event as the server describes it.

    ``since_ts`` is when its timer was started or last restarted (Unix ms); ``due_ts`` follows
    from it. ``error`` is the server's error for a ``FAILED`` event (an errcode and message).
    """

    delay_id: DelayId
    room_id: str
    type: str
    content: dict[str, Any] = field(repr=False)
    state_key: str | None = None
    delay_ms: int | None = None
    since_ts: int | None = None
    status: DelayedEventStatus = DelayedEventStatus.SCHEDULED
    event_id: str | None = None
    error: str | None = None
    finalised_ts: int | None = None

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    @property
    def due_ts(self) -> int | None:
        """When the server will send it (Unix ms), if it is scheduled and the server said."""
        if self.status is not DelayedEventStatus.SCHEDULED:
            return None
        if self.since_ts is None or self.delay_ms is None:
            return None
        return self.since_ts + self.delay_ms


def _first(obj: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if obj.get(name) is not None:
            return obj[name]
    return None


def _opt_int(obj: Mapping[str, Any], *names: str) -> int | None:
    value = _first(obj, *names)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedAnswer(f"{names[0]} is not an integer")
    return value


def _opt_str(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise MalformedAnswer(f"{name} is not a string")
    return value


def _req_str(obj: Mapping[str, Any], name: str) -> str:
    value = _opt_str(obj, name)
    if not value:
        raise MalformedAnswer(f"delayed event has no {name}")
    return value


def _segment(value: str, name: str) -> str:
    """An id the library will put in a request path (to read the room's state, or to schedule
    the event again): it must be one it can send."""
    try:
        return check_segment(value, name)
    except InvalidInput as exc:
        raise MalformedAnswer(str(exc)) from None


def _encodable(value: str, name: str) -> None:
    try:
        value.encode()
    except UnicodeEncodeError:
        raise MalformedAnswer(f"{name} holds a character that cannot be encoded") from None


def parse_delay_id(value: object) -> DelayId:
    """A ``delay_id`` a server gave, checked by the rules for one a caller gives: one the library
    could not address later (not a string, a control character, ``..``) is a malformed answer."""
    if value is None or value == "":
        raise MalformedAnswer("no delay_id")
    try:
        return DelayId(check_delay_id(value))
    except InvalidInput as exc:
        raise MalformedAnswer(f"a delay_id this library cannot use: {exc}") from None


def parse_scheduled(body: Mapping[str, Any]) -> DelayId | ErrorInfo:
    """The ``delay_id`` of a scheduling answer, or what is wrong with the answer: the event was
    sent at once (the server ignored the delay), or there is no usable ``delay_id``."""
    if body.get("delay_id") in (None, "") and "event_id" in body:
        return ErrorInfo(
            ErrorKind.SENT_IMMEDIATELY,
            "the server sent the event at once instead of scheduling it (it ignored the "
            f"delay); event_id {str(body.get('event_id'))[:100]!r}",
            http_status=200,
        )
    try:
        return parse_delay_id(body.get("delay_id"))
    except MalformedAnswer as exc:
        return ErrorInfo(
            ErrorKind.SERVER_ERROR, f"the server's answer is not usable: {exc}", http_status=200
        )


def _error_text(value: object) -> str | None:
    """``error`` is a string in some revisions and a standard error object in others."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        errcode, message = value.get("errcode"), value.get("error")
        return ": ".join(str(part) for part in (errcode, message) if part) or "unknown error"
    raise MalformedAnswer("error is neither a string nor an object")


def parse_delayed_event(obj: object, outcome: Mapping[str, Any] | None = None) -> DelayedEvent:
    """Parse one delayed event.

    ``outcome`` is the wrapper of the older list shape (``{"delayed_event": ..., "outcome": ...}``),
    which carries the result beside the event rather than in it.
    """
    if not isinstance(obj, Mapping):
        raise MalformedAnswer("a delayed event is not a JSON object")
    content = obj.get("content")
    if not isinstance(content, Mapping):
        raise MalformedAnswer("delayed event has no content object")
    finalised = obj.get("finalised")
    if finalised is not None and not isinstance(finalised, Mapping):
        raise MalformedAnswer("finalised is not an object")
    # Where the outcome lives: a nested "finalised" object, a wrapper, or flat on the event.
    result: Mapping[str, Any] = finalised or outcome or obj
    finalised_ts = _opt_int(result, "finalised_ts", "origin_server_ts")
    event_id = _opt_str(result, "event_id")
    error = _error_text(result.get("error"))
    # A scheduled event has none of these; any one of them means it is finalised.
    state_key = _opt_str(obj, "state_key")
    is_final = (
        finalised is not None
        or outcome is not None
        or finalised_ts is not None
        or event_id is not None
        or error is not None
    )
    return DelayedEvent(
        delay_id=parse_delay_id(obj.get("delay_id")),
        room_id=_segment(_req_str(obj, "room_id"), "room_id"),
        type=_segment(_req_str(obj, "type"), "type"),
        content=dict(content),
        state_key=None if state_key is None else _segment(state_key, "state_key"),
        delay_ms=_opt_int(obj, "delay_ms", "delay"),
        since_ts=_opt_int(obj, "delayed_since_ts", "scheduled_at", "running_since"),
        status=_status(is_final, event_id, error, outcome),
        event_id=event_id,
        error=error,
        finalised_ts=finalised_ts,
    )


def _status(
    is_final: bool, event_id: str | None, error: str | None, outcome: Mapping[str, Any] | None
) -> DelayedEventStatus:
    if not is_final:
        return DelayedEventStatus.SCHEDULED
    if error is not None or (outcome is not None and outcome.get("reason") == "error"):
        return DelayedEventStatus.FAILED
    if event_id is not None or (outcome is not None and outcome.get("outcome") == "send"):
        return DelayedEventStatus.SENT
    return DelayedEventStatus.CANCELLED


def parse_delayed_events_page(body: object) -> tuple[list[DelayedEvent], str | None]:
    """Parse one page of a listing; returns the events and the ``next_batch`` token, if any.

    Accepts ``{"delayed_events": [...]}`` (Synapse, MSC text) and the older
    ``{"scheduled": [...], "finalised": [{"delayed_event": ..., "outcome": ...}]}``.
    """
    if not isinstance(body, Mapping):
        raise MalformedAnswer("the listing is not a JSON object")
    next_batch = body.get("next_batch")
    if next_batch is not None and not isinstance(next_batch, str):
        raise MalformedAnswer("next_batch is not a string")
    if next_batch is not None:
        _encodable(next_batch, "next_batch")  # it goes back in the next request's query
    events: list[DelayedEvent] = []
    if "delayed_events" in body:
        events.extend(parse_delayed_event(item) for item in _list(body, "delayed_events"))
    elif "scheduled" in body or "finalised" in body:
        events.extend(parse_delayed_event(item) for item in _list(body, "scheduled"))
        for item in _list(body, "finalised"):
            if not isinstance(item, Mapping):
                raise MalformedAnswer("a finalised entry is not a JSON object")
            events.append(parse_delayed_event(item.get("delayed_event"), outcome=item))
    else:
        raise MalformedAnswer("the listing has neither delayed_events nor scheduled/finalised")
    return events, next_batch or None


def _list(body: Mapping[str, Any], name: str) -> list[Any]:
    value = body.get(name, [])
    if not isinstance(value, list):
        raise MalformedAnswer(f"{name} is not a list")
    return value
