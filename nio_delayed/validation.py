"""Checks on caller input, made before any request so that bad input never reaches a server."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

__all__ = [
    "MAX_CONTENT_BYTES",
    "MAX_JSON_INT",
    "InvalidInput",
    "check_content",
    "check_delay_id",
    "check_event",
    "check_event_type",
    "check_room_id",
    "check_state_key",
    "check_txn_id",
    "delay_to_ms",
]

# Matrix JSON integers are limited to the range JavaScript can represent exactly; Synapse
# answers a larger delay with a 500 instead of a clear error.
MAX_JSON_INT = 2**53 - 1
# A whole event is limited to 65536 bytes (spec: "Size limits"), so content alone must fit too.
MAX_CONTENT_BYTES = 65_536
# Room ids, event types and state keys are limited to 255 bytes by the same section.
_MAX_ID_BYTES = 255


class InvalidInput(ValueError):
    """An argument the server must never see. The message says what to fix."""


def delay_to_ms(delay: object) -> int:
    """Whole milliseconds from a ``timedelta`` or an ``int``; refuse anything else."""
    if isinstance(delay, bool) or not isinstance(delay, (int, timedelta)):
        raise InvalidInput(
            "delay must be a datetime.timedelta or an int of milliseconds, "
            f"not {type(delay).__name__}"
        )
    if isinstance(delay, timedelta):
        micros = delay // timedelta(microseconds=1)
        if micros % 1000:
            raise InvalidInput(f"delay must be a whole number of milliseconds, got {delay}")
        ms = micros // 1000
    else:
        ms = delay
    if ms <= 0:
        raise InvalidInput(f"delay must be positive, got {ms} ms")
    if ms > MAX_JSON_INT:
        raise InvalidInput(f"delay must be at most {MAX_JSON_INT} ms, got {ms} ms")
    return ms


def _check_identifier(
    value: object, what: str, *, allow_empty: bool = False, allow_spaces: bool = False
) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a str, not {type(value).__name__}")
    if not value and not allow_empty:
        raise InvalidInput(f"{what} must not be empty")
    if len(value.encode()) > _MAX_ID_BYTES:
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
    if isinstance(delay_id, str) and _PLAIN_ID.fullmatch(delay_id):
        return delay_id  # the keep-alive checks one on every restart: keep it cheap
    if not isinstance(delay_id, str):
        raise InvalidInput(f"delay_id must be a str, not {type(delay_id).__name__}")
    if not delay_id:
        raise InvalidInput("delay_id must not be empty")
    if any(ch.isspace() or not ch.isprintable() for ch in delay_id):
        # Do not echo it: a delay_id is a secret.
        raise InvalidInput("delay_id must not contain whitespace or control characters")
    if len(delay_id.encode()) > _MAX_ID_BYTES:
        raise InvalidInput(f"delay_id must be at most {_MAX_ID_BYTES} bytes long")
    return delay_id


def check_content(content: object) -> dict[str, Any]:
    """A JSON object that serialises (no NaN, no sets, string keys) and fits in an event."""
    if not isinstance(content, Mapping):
        raise InvalidInput(f"content must be a dict (a JSON object), not {type(content).__name__}")
    try:
        encoded = json.dumps(content, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"content is not JSON-serialisable: {exc}") from exc
    size = len(encoded.encode())
    if size > MAX_CONTENT_BYTES:
        raise InvalidInput(
            f"content is {size} bytes as JSON; an event must fit in {MAX_CONTENT_BYTES} bytes"
        )
    _check_json_ints(content)
    return dict(content)


def _check_json_ints(value: object) -> None:
    """Matrix refuses integers outside the range JavaScript represents exactly."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_JSON_INT:
        raise InvalidInput(f"content holds the integer {value}, outside ±{MAX_JSON_INT}")
    if isinstance(value, Mapping):
        for item in value.values():
            _check_json_ints(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_json_ints(item)
