"""The running switches of one manager, found by what they guard."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..wire import SWITCH_KEY_FIELD
from .switch import SwitchRuntime

__all__ = ["Identity", "SwitchRegistry", "identity"]

Identity = tuple[str, str, str | None, object]


def identity(
    room_id: str, event_type: str, state_key: str | None, content: dict[str, Any]
) -> Identity:
    """What makes two delayed events the same switch: room, type and state key; for a message,
    the switch key in its content (None for a message that no switch made)."""
    return (
        room_id,
        event_type,
        state_key,
        content.get(SWITCH_KEY_FIELD) if state_key is None else None,
    )


def identity_of(switch: SwitchRuntime) -> Identity:
    s = switch.settings
    return identity(s.room_id, s.event_type, s.state_key, s.content)


class SwitchRegistry:
    """Running switches: added once armed, forgotten when they end."""

    def __init__(self) -> None:
        self._switches: dict[int, SwitchRuntime] = {}
        self._by_identity: dict[Identity, SwitchRuntime] = {}
        #: Called after a switch is added or forgotten (the capacity plan follows).
        self.on_change: Callable[[], None] | None = None

    def __contains__(self, switch: SwitchRuntime) -> bool:
        return id(switch) in self._switches

    def __iter__(self) -> Iterator[SwitchRuntime]:
        return iter(list(self._switches.values()))

    def get(self, key: Identity) -> SwitchRuntime | None:
        return self._by_identity.get(key)

    def add(self, switch: SwitchRuntime) -> None:
        self._switches[id(switch)] = switch
        self._by_identity[identity_of(switch)] = switch
        self._changed()

    def forget(self, switch: SwitchRuntime) -> None:
        """The switch ended (or is ending): nothing acts on it any more."""
        if self._switches.pop(id(switch), None) is not None:
            self._by_identity.pop(identity_of(switch), None)
            self._changed()

    def __len__(self) -> int:
        return len(self._switches)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
