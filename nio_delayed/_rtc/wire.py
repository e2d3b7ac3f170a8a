"""What a MatrixRTC membership looks like on the wire, in each of its two forms. Pure: contents,
names and keys, built as matrix-js-sdk 43 (Element Call) builds and reads them.

- **sticky**: MSC4143's ``m.rtc.member`` under its unstable name, sent as a sticky event
  (MSC4354) whose ``msc4354_sticky_key`` (and MSC4143's ``sticky_key``) is the member id; the
  leave is a later event of the same key without an ``application``.
- **legacy**: ``org.matrix.msc3401.call.member`` state events, one per user and device; the
  leave is the same state with empty content.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = [
    "LEGACY_MEMBER_TYPE",
    "STICKY_MEMBER_TYPE",
    "LeaveCode",
    "RtcMode",
    "Slot",
    "legacy_membership",
    "legacy_state_key",
    "sticky_leave",
    "sticky_membership",
]

#: MSC4143's ``m.rtc.member`` as servers and matrix-js-sdk name it today.
STICKY_MEMBER_TYPE = "org.matrix.msc4143.rtc.member"
#: The state event of Element Call's compatibility mode (MSC3401's name).
LEGACY_MEMBER_TYPE = "org.matrix.msc3401.call.member"


class RtcMode(str, Enum):
    """How a membership is written."""

    #: Sticky ``m.rtc.member`` events (MSC4143 with MSC4354) where the server advertises sticky
    #: events, legacy state events elsewhere.
    AUTO = "auto"
    #: Sticky ``m.rtc.member`` events; needs a server with sticky events (MSC4354).
    STICKY = "sticky"
    #: ``org.matrix.msc3401.call.member`` state events, as Element Call's compatibility mode.
    LEGACY = "legacy"


class LeaveCode(str, Enum):
    """MSC4143's generic ``leave_reason.code`` values this library sends."""

    #: The bot left on purpose (the ``async with`` block ended, or ``leave()``).
    LEAVE = "leave"
    #: The server sent the scheduled leave: the bot stopped restarting it (it died).
    DELAYED_LEAVE = "delayed_leave"


@dataclass(frozen=True)
class Slot:
    """Where in the room members meet: an application and its slot there. The default,
    ``m.call#ROOM``, is the room's call as Element Call joins it."""

    application: str = "m.call"
    id: str = "ROOM"

    @property
    def slot_id(self) -> str:
        return f"{self.application}#{self.id}"

    @property
    def legacy_call_id(self) -> str:
        # The room's own call is "ROOM" in sticky events but "" in the state events that came
        # before them; clients map one onto the other.
        return "" if self.application == "m.call" and self.id == "ROOM" else self.id


def legacy_state_key(user_id: str, device_id: str, slot: Slot) -> str:
    """One state key per user, device and slot. The leading ``_`` keeps a state key that begins
    with a user id from being reserved to that user's own writes on room versions that check
    it; matrix-js-sdk drops it only for two experimental room versions."""
    return f"_{user_id}_{device_id}_{slot.application}{slot.legacy_call_id}"


def _application(
    slot: Slot, call_intent: str | None, application_data: dict[str, Any]
) -> dict[str, Any]:
    intent = {} if call_intent is None else {"m.call.intent": call_intent}
    return {**application_data, "type": slot.application, **intent}


def sticky_membership(
    *,
    user_id: str,
    device_id: str,
    member_id: str,
    slot: Slot,
    transports: list[dict[str, Any]],
    call_intent: str | None,
    application_data: dict[str, Any],
) -> dict[str, Any]:
    """A joined ``m.rtc.member``: MSC4143's fields plus those matrix-js-sdk 43 checks
    (``member.user_id`` and ``member.device_id``, ``versions``, ``msc4354_sticky_key``)."""
    return {
        "slot_id": slot.slot_id,
        "application": _application(slot, call_intent, application_data),
        "member": {
            "id": member_id,
            "user_id": user_id,
            "device_id": device_id,
            "membership": "join",
        },
        "transports": {
            "published": transports,
            "can_subscribe": sorted({t["type"] for t in transports} | {"livekit"}),
        },
        "versions": [],
        "sticky_key": member_id,
        "msc4354_sticky_key": member_id,
    }


def sticky_leave(
    *, user_id: str, device_id: str, member_id: str, slot: Slot, code: LeaveCode
) -> dict[str, Any]:
    """A left ``m.rtc.member`` for the same member: no ``application``, so every reader (the
    MSC's ``membership``, matrix-js-sdk's "no application") sees a leave."""
    return {
        "slot_id": slot.slot_id,
        "member": {
            "id": member_id,
            "user_id": user_id,
            "device_id": device_id,
            "membership": "leave",
        },
        "leave_reason": {"code": code.value},
        "sticky_key": member_id,
        "msc4354_sticky_key": member_id,
    }


def legacy_membership(
    *,
    user_id: str,
    device_id: str,
    slot: Slot,
    transports: list[dict[str, Any]],
    call_intent: str | None,
    application_data: dict[str, Any],
    expires_ms: int,
    created_ts: int | None,
) -> dict[str, Any]:
    """A joined ``org.matrix.msc3401.call.member`` state content, as matrix-js-sdk 43 writes it.

    ``expires_ms`` counts from ``created_ts`` (the first join; absent on it, when readers take
    the event's own timestamp): a refresh keeps ``created_ts`` and lengthens ``expires_ms``.
    """
    content: dict[str, Any] = {
        **application_data,
        "application": slot.application,
        "call_id": slot.legacy_call_id,
        "scope": "m.room",
        "device_id": device_id,
        "membershipID": f"{user_id}:{device_id}",
        "expires": expires_ms,
        "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"},
        "foci_preferred": transports,
    }
    if call_intent is not None:
        content["m.call.intent"] = call_intent
    if created_ts is not None:
        content["created_ts"] = created_ts
    return content
