"""Checks on caller input, made before any request so that bad input never reaches a server.

Every check raises :class:`InvalidInput` (never another exception) for any argument at all, so that
the API can turn it into a typed ``INVALID`` error and send nothing. What each content check
prevents (an event the server accepts and then drops) is on the docs' protocol page
(docs/protocol.md, "What can make an event late, early or lost").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import timedelta
from enum import Enum
from typing import Any, TypeVar

__all__ = [
    "EVENT_ENVELOPE_BYTES",
    "MAX_CONTENT_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_JSON_INT",
    "MAX_STICKY_MS",
    "InvalidInput",
    "check_content",
    "check_delay_id",
    "check_event",
    "check_event_type",
    "check_room_id",
    "check_segment",
    "check_state_key",
    "check_txn_id",
    "coerce_policy",
    "delay_to_ms",
    "sticky_to_ms",
]

# Matrix canonical JSON has integers in this range only (the range JavaScript represents
# exactly); Synapse answers a larger delay with a 500 and refuses such content when it builds
# the event.
MAX_JSON_INT = 2**53 - 1
# A whole event, as the server signs and stores it, is limited to 65536 bytes of canonical JSON
# (spec: "Size limits"; Synapse's MAX_PDU_SIZE, checked when the event is built: for a delayed
# event that is when it fires, long after it was accepted).
MAX_EVENT_BYTES = 65_536
# What the server adds around the content: room_id, sender, type, state_key (255 bytes each at
# most), origin_server_ts, depth, up to 10 prev_events and the auth_events (47 bytes each),
# hashes, the server's signature (its name may be 255 bytes) and unsigned (age_ts,
# replaces_state). Measured on Synapse 1.163 with short names (a 44-byte room id, @bot:localhost):
# 564 bytes for a message, 644 for a state event; with every name at its maximum and every list
# at its longest, about 2.7 KiB. 4 KiB leaves room for fields a server version adds.
EVENT_ENVELOPE_BYTES = 4_096
#: The largest content (bytes of canonical JSON) that surely fits in an event once sent.
MAX_CONTENT_BYTES = MAX_EVENT_BYTES - EVENT_ENVELOPE_BYTES
# Deeper content is refused: far deeper than any real event, and far from Python's recursion
# limit, which the JSON encoders here and in nio (encryption) would otherwise hit.
MAX_JSON_DEPTH = 100
#: The longest stickiness MSC4354 allows (one hour): a longer-lived presence is sent again.
MAX_STICKY_MS = 3_600_000
# Room ids, event types and state keys are limited to 255 bytes by the same section.
_MAX_ID_BYTES = 255
# A URL library resolves these path segments (also percent-encoded: yarl decodes %2E first),
# so a request naming one would reach another endpoint.
_DOT_SEGMENTS = frozenset({".", ".."})

_P = TypeVar("_P", bound=Enum)


class InvalidInput(ValueError):
    """An argument the server must never see. The message says what to fix."""


def delay_to_ms(delay: object) -> int:
    """Whole milliseconds from a ``timedelta`` or an ``int``; refuse anything else."""
    return _positive_ms(delay, "delay", MAX_JSON_INT)


def sticky_to_ms(duration: object) -> int:
    """Whole milliseconds of stickiness (a ``timedelta`` or an ``int``): positive, at most
    one hour."""
    return _positive_ms(duration, "sticky_duration", MAX_STICKY_MS)


def _positive_ms(value: object, name: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, timedelta)):
        raise InvalidInput(
            f"{name} must be a datetime.timedelta or an int of milliseconds, "
            f"not {type(value).__name__}"
        )
    if isinstance(value, timedelta):
        micros = value // timedelta(microseconds=1)
        if micros % 1000:
            raise InvalidInput(f"{name} must be a whole number of milliseconds, got {value}")
        ms = micros // 1000
    else:
        ms = value
    if ms <= 0:
        raise InvalidInput(f"{name} must be positive, got {ms} ms")
    if ms > maximum:
        raise InvalidInput(f"{name} must be at most {maximum} ms, got {ms} ms")
    return ms


def coerce_policy(enum_cls: type[_P], value: object, name: str) -> _P:
    """The member of ``enum_cls`` that ``value`` is, or whose exact value it is (``"send"``).

    Anything else is refused: a plain string compared by identity with a member would otherwise
    quietly take another branch (``"send"`` is not ``ExitPolicy.SEND``).
    """
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str) and not isinstance(value, Enum):
        for member in enum_cls:
            if member.value == value:
                return member
    choices = ", ".join(repr(member.value) for member in enum_cls)
    shown = repr(value) if isinstance(value, (str, Enum)) else type(value).__name__
    raise InvalidInput(
        f"{name} must be one of {choices} (the {enum_cls.__name__} values), not {shown}"
    )


def _utf8_size(text: str, what: str) -> int:
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        # A lone surrogate: no UTF-8 (so no JSON a server reads) can carry it.
        raise InvalidInput(f"{what} holds a character that cannot be encoded") from None


def check_segment(value: object, what: str) -> str:
    """A string that can stand as one segment of a request path: it encodes, and no URL library
    resolves it away. The least every id in a path needs, the server's included."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a str, not {type(value).__name__}")
    _utf8_size(value, what)
    if value in _DOT_SEGMENTS:
        raise InvalidInput(
            f"{what} must not be {value!r}: in a request path it would name another endpoint"
        )
    return value


def _check_identifier(
    value: object, what: str, *, allow_empty: bool = False, allow_spaces: bool = False
) -> str:
    value = check_segment(value, what)
    if not value and not allow_empty:
        raise InvalidInput(f"{what} must not be empty")
    if _utf8_size(value, what) > _MAX_ID_BYTES:
        raise InvalidInput(f"{what} must be at most {_MAX_ID_BYTES} bytes long")
    if any(not ch.isprintable() and not (allow_spaces and ch == " ") for ch in value):
        raise InvalidInput(f"{what} must not contain control characters: {value!r}")
    if not allow_spaces and any(ch.isspace() for ch in value):
        raise InvalidInput(f"{what} must not contain whitespace: {value!r}")
    return value


def check_room_id(room_id: object) -> str:
    room_id = _check_identifier(room_id, "room_id")
    if not room_id.startswith("!") or len(room_id) < 2:
        hint = (
            " (resolve an alias with room_resolve_alias first)" if room_id.startswith("#") else ""
        )
        raise InvalidInput(
            f"room_id must look like '!opaque:server' or '!opaque', got {room_id!r}{hint}"
        )
    return room_id


def check_event_type(event_type: object) -> str:
    return _check_identifier(event_type, "event_type")


def check_state_key(state_key: object) -> str:
    # Any string is a valid state key, spaces and the empty string included.
    return _check_identifier(state_key, "state_key", allow_empty=True, allow_spaces=True)


def check_txn_id(txn_id: object) -> str:
    return _check_identifier(txn_id, "tx_id")


# Printable ASCII without spaces: every delay_id seen in the field; the quick path.
_PLAIN_ID = re.compile(r"[!-~]{1,255}")


def check_event(
    room_id: object, event_type: object, content: object, state_key: object = None
) -> tuple[str, str, dict[str, Any], str | None]:
    """Room, type, content and (``None`` for a message) state key of an event to send."""
    return (
        check_room_id(room_id),
        check_event_type(event_type),
        check_content(content),
        None if state_key is None else check_state_key(state_key),
    )


def check_delay_id(delay_id: object) -> str:
    """A ``delay_id``, from a caller or from a server: one this library can address later."""
    if (
        isinstance(delay_id, str)
        and _PLAIN_ID.fullmatch(delay_id)
        and delay_id not in _DOT_SEGMENTS
    ):
        return delay_id  # the keep-alive checks one on every restart: keep it cheap
    if not isinstance(delay_id, str):
        raise InvalidInput(f"delay_id must be a str, not {type(delay_id).__name__}")
    if not delay_id:
        raise InvalidInput("delay_id must not be empty")
    # Do not echo it: a delay_id is a secret.
    if any(ch.isspace() or not ch.isprintable() for ch in delay_id):
        # Lone surrogates are not printable: refused here, before anything encodes them.
        raise InvalidInput("delay_id must not contain whitespace or control characters")
    if delay_id in _DOT_SEGMENTS:
        raise InvalidInput("delay_id must not be '.' or '..': it would name another endpoint")
    if _utf8_size(delay_id, "delay_id") > _MAX_ID_BYTES:
        raise InvalidInput(f"delay_id must be at most {_MAX_ID_BYTES} bytes long")
    return delay_id


def check_content(content: object) -> dict[str, Any]:
    """A JSON object that Matrix canonical JSON can carry and that fits in an event once sent.

    Refused: keys that are not strings (JSON would turn ``1`` and ``"1"`` into one key), text
    that cannot be encoded, floats (canonical JSON has integers only, so the server would refuse
    the event when it fires), integers outside ±(2^53-1), nesting deeper than
    :data:`MAX_JSON_DEPTH`, and more than :data:`MAX_CONTENT_BYTES` of JSON.
    """
    if not isinstance(content, Mapping):
        raise InvalidInput(f"content must be a dict (a JSON object), not {type(content).__name__}")
    checked = dict(content)
    _check_json(checked)
    # Safe now: no cycle, no surrogate, no unknown type, bounded depth.
    size = len(json.dumps(checked, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_CONTENT_BYTES:
        raise InvalidInput(
            f"content is {size} bytes as JSON; at most {MAX_CONTENT_BYTES} fit in an event "
            f"({MAX_EVENT_BYTES} bytes with what the server adds around it)"
        )
    return checked


def _check_json(content: dict[str, Any]) -> None:
    """Walk the content without recursion; name the first value canonical JSON cannot carry."""
    stack: list[tuple[object, str, int]] = [(content, "content", 1)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth > MAX_JSON_DEPTH:
                raise InvalidInput(f"content is nested deeper than {MAX_JSON_DEPTH} levels")
            stack.extend(_children(value, where, depth))
        else:
            _check_scalar(value, where)


def _children(
    value: dict[Any, Any] | list[Any] | tuple[Any, ...], where: str, depth: int
) -> list[tuple[object, str, int]]:
    if not isinstance(value, dict):
        return [(item, f"{where}[{index}]", depth + 1) for index, item in enumerate(value)]
    children: list[tuple[object, str, int]] = []
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidInput(
                f"{where} has a key that is not a str: {type(key).__name__} {key!r:.40}"
            )
        _utf8_size(key, f"a key in {where}")
        children.append((item, f"{where}[{key!r:.40}]", depth + 1))
    return children


def _check_scalar(value: object, where: str) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _utf8_size(value, where)
    elif isinstance(value, int):
        if abs(value) > MAX_JSON_INT:
            raise InvalidInput(f"{where} is an integer outside ±{MAX_JSON_INT}")
    elif isinstance(value, float):
        # Synapse 1.163 (room version 12) schedules a delayed event holding a float, then
        # never sends it: building the event fails. Sent at once, it is a 400 M_BAD_JSON.
        kind = "a float" if math.isfinite(value) else f"{value!r}"
        raise InvalidInput(
            f"{where} is {kind}: Matrix canonical JSON has integers only (the server would "
            "refuse the event); send a string or an integer"
        )
    else:
        raise InvalidInput(
            f"{where} is not JSON-serialisable: a {type(value).__name__} (use dict, list, "
            "str, int, bool or None)"
        )
