"""Names this library writes into events on the wire, shared by the client and the keep-alive."""

from __future__ import annotations

__all__ = ["ENCRYPTED_TYPE", "OWNER_FIELD", "SWITCH_KEY_FIELD"]

#: Where a message switch keeps its key, in the event's content. It stays readable beside the
#: ciphertext of an encrypted event, so that a restarted bot knows its own leftovers.
SWITCH_KEY_FIELD = "org.nio_delayed.switch"
#: Who armed a switch's event (the device id, or the bot's configured owner id), in its content
#: next to the key: a switch adopts or cancels only what its own owner armed. Readable beside the
#: ciphertext too.
OWNER_FIELD = "org.nio_delayed.owner"
#: The type every encrypted message event has on the wire.
ENCRYPTED_TYPE = "m.room.encrypted"
