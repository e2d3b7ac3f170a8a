"""Names this library writes into events on the wire, or reads from them, shared by the client
and the keep-alive."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from nio.responses import SyncResponse

__all__ = [
    "ENCRYPTED_TYPE",
    "OWNER_FIELD",
    "SWITCH_KEY_FIELD",
    "UNSIGNED_DELAY_ID_FIELDS",
    "fired_delay_id",
    "own_fired_events",
    "switch_key",
]

#: Where a message switch keeps its key, in the event's content. It stays readable beside the
#: ciphertext of an encrypted event, so that a restarted bot knows its own leftovers.
SWITCH_KEY_FIELD = "org.nio_delayed.switch"
#: Who armed a switch's event (the device id, or the bot's configured owner id), in its content
#: next to the key: a switch adopts or cancels only what its own owner armed. Readable beside the
#: ciphertext too.
OWNER_FIELD = "org.nio_delayed.owner"
#: The type every encrypted message event has on the wire.
ENCRYPTED_TYPE = "m.room.encrypted"
#: Where a fired delayed event carries its ``delay_id``, in ``unsigned`` of its sender's own copy
#: (the merged MSC4140; Synapse 1.150+ has the unstable name): the one sign, seen in the sync,
#: that the server sent it.
UNSIGNED_DELAY_ID_FIELDS = ("org.matrix.msc4140.delay_id", "delay_id")


def switch_key(state_key: str | None, content: Mapping[str, Any]) -> str | None:
    """What tells a switch apart within its room and type: its state key, or a message
    switch's key in its content (None for a message that no switch made)."""
    if state_key is not None:
        return state_key
    key = content.get(SWITCH_KEY_FIELD)
    return key if isinstance(key, str) else None


def fired_delay_id(event: Mapping[str, Any]) -> str | None:
    """The ``delay_id`` a timeline event (its JSON) says it was sent for, or None."""
    unsigned = event.get("unsigned")
    if not isinstance(unsigned, Mapping):
        return None
    for name in UNSIGNED_DELAY_ID_FIELDS:
        value = unsigned.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def own_fired_events(
    response: SyncResponse, user_id: str
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(room_id, delay_id, event)`` for each delayed event of ``user_id`` the sync shows sent
    (in a joined room's timeline, marked with its delay id)."""
    for room_id, info in response.rooms.join.items():
        for event in info.timeline.events:
            source = getattr(event, "source", None)
            if not isinstance(source, dict) or source.get("sender") != user_id:
                continue
            delay_id = fired_delay_id(source)
            if delay_id is not None:
                yield room_id, delay_id, source
