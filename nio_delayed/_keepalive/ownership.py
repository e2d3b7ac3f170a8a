"""Whose a leftover is. A switch adopts or cancels only what its own owner armed: this device
(the default owner) or the bot's configured owner id. Other devices and programs of the same
account (a web client's call membership, a staging instance) schedule delayed events on the same
room, type and state key; those are left alone.

A leftover of the same room, type and state key (for a message, the same switch key) is the
switch's when, in this order:

1. the bot's local record lists its ``delay_id`` (this bot armed it, whatever its content);
2. its content carries an owner marker (``org.nio_delayed.owner``): it is ours when the marker
   is our owner id, another's otherwise;
3. the switch sends its content exactly as given (``exact_content``) and its state key holds the
   owner id: a per-device key that no other device writes;
4. a message without a marker that carries our switch key (``org.nio_delayed.switch``): only
   this library writes that key, so an earlier version of it made the event.

Anything else is not ours: above all an unmarked state event, which any client may have
scheduled (a web client's call membership has cancelled no switch of ours, and none of ours
cancels it).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..models import DelayedEvent
from ..wire import OWNER_FIELD
from .switch import SwitchSettings

__all__ = ["Ownership", "Provenance", "unmarked"]


class Provenance(str, Enum):
    #: Armed by this owner (its marker, the record, or its per-device state key).
    OURS = "ours"
    #: No owner marker, made by an earlier version of this library: taken as ours.
    EARLIER = "earlier"
    #: Another device's or program's: left alone, and reported.
    FOREIGN = "foreign"


@dataclass(frozen=True)
class Ownership:
    """The owner id the switches of one manager write, and the record that lists what it armed
    (empty without one)."""

    owner: str
    recorded: Container[str]

    def of(self, event: DelayedEvent, settings: SwitchSettings) -> tuple[Provenance, str]:
        """Whose ``event`` (of the switch's room, type and state key) is, and why."""
        if event.delay_id in self.recorded:
            return Provenance.OURS, "in this bot's record"
        marker = event.content.get(OWNER_FIELD)
        if marker is not None:
            if marker == self.owner:
                return Provenance.OURS, "our owner marker"
            return Provenance.FOREIGN, f"armed by owner {str(marker)[:64]!r}"
        if settings.exact_content and self.per_owner_key(settings.state_key):
            return Provenance.OURS, "its state key is this owner's"
        if settings.state_key is None:
            return Provenance.EARLIER, "our switch key, no owner marker (an earlier version)"
        return Provenance.FOREIGN, "no owner marker and not in this bot's record"

    def per_owner_key(self, state_key: str | None) -> bool:
        """A state key no other owner writes: it holds the owner id (a MatrixRTC per-device key
        such as ``_@bot:example.org_DEVICEID_m.call`` does)."""
        return state_key is not None and self.owner in state_key


def unmarked(content: dict[str, Any]) -> dict[str, Any]:
    """``content`` without the owner marker: what two owners' events of one switch share."""
    return {k: v for k, v in content.items() if k != OWNER_FIELD}
