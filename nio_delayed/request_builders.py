"""Build the HTTP requests of each dialect (``support.Dialect``; the endpoints are tabled in
docs/protocol.md, "Dialects"). Pure: no I/O, no checks.

Arguments are assumed valid (see ``validation``); every path segment is percent-encoded here, and a
segment no encoding can carry (``.`` and ``..``, which a URL library resolves) is a programming
error: ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import quote, urlencode

from .delay_id import shorten
from .support import Dialect, ManagementForm

__all__ = [
    "DelayedEventAction",
    "HttpRequest",
    "capabilities_request",
    "event_request",
    "list_request",
    "lookup_request",
    "msc4486_list_request",
    "probe_request",
    "schedule_request",
    "state_event_request",
    "update_request",
    "versions_request",
]

UNSTABLE_PREFIX = "/_matrix/client/unstable/org.matrix.msc4140"
MSC4486_PREFIX = "/_matrix/client/unstable/org.matrix.msc4486"
LEGACY_DELAY_PARAM = "org.matrix.msc4140.delay"
STICKY_PARAM = "org.matrix.msc4354.sticky_duration_ms"


class DelayedEventAction(str, Enum):
    """What to do with a scheduled delayed event: restart its timer, cancel it, or send it now."""

    RESTART = "restart"
    CANCEL = "cancel"
    SEND = "send"


@dataclass(frozen=True)
class HttpRequest:
    """One request to the homeserver.

    ``idempotent`` says whether sending it twice has the effect of sending it once, so that a
    retry after an unanswered attempt is safe. ``log_path`` is the path with secrets shortened;
    ``secrets`` are those the request names (its delay_id), to redact from what comes back.
    ``repr`` shows ``log_path`` only.
    """

    method: str
    path: str = field(repr=False)
    body: dict[str, Any] | None = field(default=None, repr=False)
    idempotent: bool = True
    log_path: str = field(default="", compare=False)
    secrets: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.log_path:
            object.__setattr__(self, "log_path", self.path)


def _seg(value: str) -> str:
    if value in (".", ".."):
        # No encoding survives: yarl decodes "%2E" and resolves it like ".".
        raise ValueError(f"{value!r} cannot be a path segment: it would name another endpoint")
    return quote(value, safe="")


def versions_request() -> HttpRequest:
    return HttpRequest("GET", "/_matrix/client/versions")


def capabilities_request() -> HttpRequest:
    return HttpRequest("GET", "/_matrix/client/v3/capabilities")


def _scheduling_prefix(dialect: Dialect) -> str:
    return "/_matrix/client/v3" if dialect is Dialect.STABLE else UNSTABLE_PREFIX


def _management_prefix(dialect: Dialect) -> str:
    return "/_matrix/client/v1" if dialect is Dialect.STABLE else UNSTABLE_PREFIX


def schedule_request(
    dialect: Dialect,
    room_id: str,
    event_type: str,
    content: dict[str, Any],
    delay_ms: int,
    *,
    txn_id: str,
    state_key: str | None = None,
    sticky_duration_ms: int | None = None,
) -> HttpRequest:
    """Schedule a message (``state_key=None``) or a state event; a message may be sticky once
    sent (MSC4354: a query parameter, on whichever path the dialect schedules with)."""
    room, etype = _seg(room_id), _seg(event_type)
    sticky = {} if sticky_duration_ms is None else {STICKY_PARAM: sticky_duration_ms}
    if dialect is Dialect.LEGACY:
        query = urlencode({LEGACY_DELAY_PARAM: delay_ms, **sticky})
        if state_key is None:
            path = f"/_matrix/client/v3/rooms/{room}/send/{etype}/{_seg(txn_id)}?{query}"
            return HttpRequest("PUT", path, content)
        # /state has no transaction id: a second attempt would schedule a second event.
        path = f"/_matrix/client/v3/rooms/{room}/state/{etype}/{_seg(state_key)}?{query}"
        return HttpRequest("PUT", path, content, idempotent=False)
    # MSC revisions name the delay "delay" (MSC text) or "delay_ms" (later drafts); servers
    # ignore unknown keys, so both carry the same value.
    body: dict[str, Any] = {"delay": delay_ms, "delay_ms": delay_ms, "content": content}
    if state_key is not None:
        body["state_key"] = state_key
    path = f"{_scheduling_prefix(dialect)}/rooms/{room}/delayed_event/{etype}/{_seg(txn_id)}"
    if sticky:
        path += "?" + urlencode(sticky)
    return HttpRequest("PUT", path, body)


def event_request(
    room_id: str,
    event_type: str,
    content: dict[str, Any],
    *,
    txn_id: str,
    state_key: str | None = None,
) -> HttpRequest:
    """An ordinary event, sent now (the keep-alive's "alive" event). Setting the same state
    twice, or replaying a transaction id, has the effect of doing it once."""
    room, etype = _seg(room_id), _seg(event_type)
    if state_key is None:
        return HttpRequest(
            "PUT", f"/_matrix/client/v3/rooms/{room}/send/{etype}/{_seg(txn_id)}", content
        )
    return HttpRequest(
        "PUT", f"/_matrix/client/v3/rooms/{room}/state/{etype}/{_seg(state_key)}", content
    )


def probe_request(txn_id: str) -> HttpRequest:
    """The merged MSC's unstable scheduling endpoint, with a body no server can act on."""
    path = (
        f"{UNSTABLE_PREFIX}/rooms/{_seg('!nio-delayed-probe:invalid')}"
        f"/delayed_event/m.room.message/{_seg(txn_id)}"
    )
    return HttpRequest("PUT", path, {})


def update_request(
    dialect: Dialect, delay_id: str, action: DelayedEventAction, form: ManagementForm
) -> HttpRequest:
    """Restart, cancel or send now. Only the restart is idempotent on every server."""
    base = f"{_management_prefix(dialect)}/delayed_events/"
    idempotent = action is DelayedEventAction.RESTART
    if form is ManagementForm.PATH:
        return HttpRequest(
            "POST",
            f"{base}{_seg(delay_id)}/{action.value}",
            {},
            idempotent,
            f"{base}{shorten(delay_id)}/{action.value}",
            (delay_id,),
        )
    return HttpRequest(
        "POST",
        f"{base}{_seg(delay_id)}",
        {"action": action.value},
        idempotent,
        f"{base}{shorten(delay_id)}",
        (delay_id,),
    )


def lookup_request(dialect: Dialect, delay_id: str) -> HttpRequest:
    base = f"{_management_prefix(dialect)}/delayed_events/"
    return HttpRequest(
        "GET",
        f"{base}{_seg(delay_id)}",
        log_path=f"{base}{shorten(delay_id)}",
        secrets=(delay_id,),
    )


def list_request(dialect: Dialect, from_token: str | None = None) -> HttpRequest:
    path = f"{_management_prefix(dialect)}/delayed_events"
    if from_token is not None:
        path += "?" + urlencode({"from": from_token})
    return HttpRequest("GET", path)


def msc4486_list_request(
    *,
    stable: bool,
    from_token: str | None = None,
    status: str | None = None,
    room_id: str | None = None,
    event_type: str | None = None,
) -> HttpRequest:
    """One page of the MSC4486 listing, filtered by the server."""
    base = "/_matrix/client/v1" if stable else MSC4486_PREFIX
    query = {
        name: value
        for name, value in (
            ("status", status),
            ("room_id", room_id),
            ("type", event_type),
            ("from", from_token),
        )
        if value is not None
    }
    path = f"{base}/delayed_events"
    return HttpRequest("GET", f"{path}?{urlencode(query)}" if query else path)


def state_event_request(room_id: str, event_type: str, state_key: str) -> HttpRequest:
    """The current state event, whole (``format=event``: with its sender and timestamp)."""
    return HttpRequest(
        "GET",
        f"/_matrix/client/v3/rooms/{_seg(room_id)}/state/{_seg(event_type)}/{_seg(state_key)}"
        "?format=event",
    )
