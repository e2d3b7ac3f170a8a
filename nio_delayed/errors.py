"""Classify error answers into one kind a program can branch on, whatever revision of the
protocol or proxy wrote them; take the client's secrets out of their text. Pure."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any

from .delay_id import redact

__all__ = [
    "MAX_MESSAGE_CHARS",
    "MAX_RETRY_AFTER_MS",
    "ErrorInfo",
    "ErrorKind",
    "classify_error",
    "is_unrecognized",
    "parse_retry_after_header",
    "retry_after_ms",
]

#: The longest wait a server can ask for that is reported as it is; longer ones are this
#: (about 285 000 years: "never", in a number every JSON reader and timer takes).
MAX_RETRY_AFTER_MS = 2**53 - 1
#: Text from a server or a proxy is cut to this many characters in an error's message.
MAX_MESSAGE_CHARS = 500


class ErrorKind(str, Enum):
    """What went wrong, in terms a caller can act on."""

    #: No such delayed event: unknown id, already sent or cancelled (Synapse keeps no record).
    NOT_FOUND = "not_found"
    #: The action conflicts with how the event was finalised (merged MSC: 409).
    CONFLICT = "conflict"
    #: Rate limited or too many scheduled; ``retry_after_ms`` says when to try again, if known.
    RATE_LIMITED = "rate_limited"
    #: The delay is above the server's maximum; ``max_delay_ms`` has it, if the server said.
    DELAY_TOO_LARGE = "delay_too_large"
    #: The server does not offer delayed events (or this operation). Nothing was sent.
    UNSUPPORTED = "unsupported"
    #: Not allowed: not in the room, no power.
    FORBIDDEN = "forbidden"
    #: The access token is missing, unknown or expired (401, ``M_UNKNOWN_TOKEN``): no request
    #: can succeed until the client has a working one. ``soft_logout`` on the error: the server
    #: keeps the device, so logging in again to it keeps its keys.
    UNAUTHORIZED = "unauthorized"
    #: The request was refused as invalid, by the server or by our checks before sending.
    INVALID = "invalid"
    #: The server failed (5xx) or answered something that is not a valid answer.
    SERVER_ERROR = "server_error"
    #: No answer: connection failed, reset, or timed out. The request may or may not have acted.
    NETWORK = "network"
    #: The server sent the event at once instead of scheduling it: it ignored the delay.
    SENT_IMMEDIATELY = "sent_immediately"
    #: A message for an encrypted room could not be encrypted (unverified devices, a failed key
    #: share). Nothing was sent.
    ENCRYPTION = "encryption"
    #: The sent event of a delayed event was not seen in the client's sync in time (see
    #: ``delayed_event_sent``): not sent yet, no sync loop, or a server that does not mark it.
    NOT_SEEN = "not_seen"


@dataclass(frozen=True)
class ErrorInfo:
    kind: ErrorKind
    message: str
    errcode: str | None = None
    http_status: int | None = None
    retry_after_ms: int | None = None
    max_delay_ms: int | None = None
    #: With :attr:`ErrorKind.UNAUTHORIZED`: the server asked for a "soft logout".
    soft_logout: bool = False


_UNRECOGNIZED = "M_UNRECOGNIZED"
_TOO_LARGE_CODES = {
    "ORG.MATRIX.MSC4140_DELAY_TOO_LARGE",  # Synapse >= 1.157
    "ORG.MATRIX.MSC4140_MAX_DELAY_EXCEEDED",  # the merged MSC's unstable code
    "M_DELAY_TOO_LARGE",  # merged MSC drafts
    "M_MAX_DELAY_EXCEEDED",  # the merged MSC's stable code and, nested, older Synapse
}
_UNSUPPORTED_CODES = {"M_MAX_DELAY_UNSUPPORTED"}
_TOKEN_CODES = {"M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"}
_LEGACY_ERRCODE = "org.matrix.msc4140.errcode"
_MAX_DELAY_FIELDS = ("max_delay_ms", "max_delay", "org.matrix.msc4140.max_delay")
# Synapse 1.163 gives its maximum only in the message: "... the allowed maximum (86400000ms)".
_MAX_IN_MESSAGE = re.compile(r"maximum \(([0-9]{1,16}) ?ms\)")
# Synapse's answer when the feature is configured off: 403 M_FORBIDDEN with this message.
_DISALLOWED = re.compile(
    r"delayed events (has been|have been|are) (disallowed|not supported)", re.I
)


# Delta-seconds; a fraction is not in the HTTP grammar but its meaning is plain.
_DELTA_SECONDS = re.compile(r"[0-9]{1,30}(\.[0-9]{1,9})?")


def parse_retry_after_header(value: str | None, now: float | None = None) -> int | None:
    """``Retry-After`` in milliseconds: delta-seconds or an HTTP date (needs ``now``, Unix s).

    ``None`` for anything else (negative, garbage, a date without ``now``); never raises. A
    date in the past is 0; a wait beyond :data:`MAX_RETRY_AFTER_MS` is that.
    """
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return _clamp_ms(float(value) * 1000)
    if now is None or not math.isfinite(now):
        return None
    try:
        when = parsedate_to_datetime(value)
        delta = when.timestamp() - now
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
    return _clamp_ms(delta * 1000)


def retry_after_ms(
    body: Mapping[str, Any] | None, header: str | None, now: float | None = None
) -> int | None:
    """The wait a server asked for, in milliseconds: the body's ``retry_after_ms`` if it is a
    number, else the ``Retry-After`` header. Never raises; always in [0, MAX_RETRY_AFTER_MS]."""
    value = body.get("retry_after_ms") if body is not None else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return _clamp_ms(value)
    return parse_retry_after_header(header, now)


def _clamp_ms(ms: float) -> int:
    """Whole milliseconds, rounded up, within [0, MAX_RETRY_AFTER_MS]; NaN is 0."""
    if not ms >= 0:  # negative or NaN
        return 0
    if ms >= MAX_RETRY_AFTER_MS:  # also inf, and integers too large for a float
        return MAX_RETRY_AFTER_MS
    return math.ceil(ms)


def _int_field(body: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _str_field(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) else None


def _decode(body: bytes) -> Mapping[str, Any] | None:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return parsed if isinstance(parsed, Mapping) else None


def classify_error(
    status: int,
    body: bytes,
    retry_after_header: str | None = None,
    *,
    now: float | None = None,
    secrets: Iterable[str] = (),
) -> ErrorInfo:
    """Turn an HTTP error answer (status >= 400) into an :class:`ErrorInfo`. Never raises.

    ``secrets`` (the access token, the delay_ids the client knows) are taken out of every text
    that came from the answer before it is cut short: a server or a proxy may echo a request.
    """
    secrets = tuple(secrets)
    parsed = _decode(body)
    if parsed is None:
        text = _text(body.decode(errors="replace").strip() or "empty body", secrets)
        # Not from the homeserver itself (a proxy, a load balancer): a bare 404 or 409 must
        # not read as "the delayed event is gone", which would make a keep-alive re-arm.
        kind = _kind_from_status(status)
        if kind in (ErrorKind.NOT_FOUND, ErrorKind.CONFLICT, ErrorKind.INVALID):
            kind = ErrorKind.SERVER_ERROR
        return ErrorInfo(
            kind,
            f"HTTP {status} with a body that is not a Matrix error: {text}",
            http_status=status,
            retry_after_ms=parse_retry_after_header(retry_after_header, now)
            if kind is ErrorKind.RATE_LIMITED
            else None,
        )
    errcode = _str_field(parsed, "errcode")
    legacy_code = _str_field(parsed, _LEGACY_ERRCODE)
    raw_message = _str_field(parsed, "error") or ""
    codes = {errcode, legacy_code}
    max_delay_ms = _int_field(parsed, *_MAX_DELAY_FIELDS)
    if max_delay_ms is None and (match := _MAX_IN_MESSAGE.search(raw_message)):
        max_delay_ms = int(match.group(1))

    if status == 429 or errcode == "M_LIMIT_EXCEEDED":
        kind = ErrorKind.RATE_LIMITED
    elif status == 401 or errcode in _TOKEN_CODES:
        kind = ErrorKind.UNAUTHORIZED
    elif codes & _TOO_LARGE_CODES or (status == 403 and max_delay_ms is not None):
        kind = ErrorKind.DELAY_TOO_LARGE
    elif (
        codes & _UNSUPPORTED_CODES
        or errcode == _UNRECOGNIZED
        or status == 405
        or (errcode == "M_FORBIDDEN" and _DISALLOWED.search(raw_message))
    ):
        kind = ErrorKind.UNSUPPORTED
    else:
        kind = _kind_from_status(status)
    shown_code = None if errcode is None else _text(errcode, secrets)
    return ErrorInfo(
        kind,
        _text(raw_message, secrets) or f"HTTP {status} {shown_code or 'error'}",
        errcode=shown_code,
        http_status=status,
        retry_after_ms=retry_after_ms(parsed, retry_after_header, now)
        if kind is ErrorKind.RATE_LIMITED
        else None,
        max_delay_ms=max_delay_ms if kind is ErrorKind.DELAY_TOO_LARGE else None,
        soft_logout=kind is ErrorKind.UNAUTHORIZED and parsed.get("soft_logout") is True,
    )


def _text(text: str, secrets: tuple[str, ...]) -> str:
    """Server-written text as an error shows it: secrets out first, then cut short (a secret cut
    in two would no longer be found)."""
    text = redact(text, secrets)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + "…"
    return text


def _kind_from_status(status: int) -> ErrorKind:
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status == 409:
        return ErrorKind.CONFLICT
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status == 401:
        return ErrorKind.UNAUTHORIZED
    if status == 403:
        return ErrorKind.FORBIDDEN
    if 400 <= status < 500:
        return ErrorKind.INVALID
    return ErrorKind.SERVER_ERROR


def is_unrecognized(info: ErrorInfo) -> bool:
    """The server has no such endpoint (as opposed to: it has it, and refused)."""
    return info.errcode == _UNRECOGNIZED or info.http_status == 405
