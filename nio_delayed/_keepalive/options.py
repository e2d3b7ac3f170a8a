"""The arguments of :meth:`KeepAliveManager.add`, checked before anything is sent.

Every argument is checked for its type and range here, so that a wrong one raises the documented
``InvalidInput`` (a ``ValueError``) naming it, never a ``TypeError`` or ``AttributeError`` from
deep inside, and never after a request went out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from ..validation import (
    MIN_RESTART_INTERVAL_S,
    InvalidInput,
    check_content,
    check_event,
    check_event_type,
    check_state_key,
    coerce_policy,
    read_seconds,
    sticky_to_ms,
    switch_delay_ms,
    warn_bare_number,
)
from ..wire import SWITCH_KEY_FIELD
from .switch import (
    AliveEvent,
    ExitPolicy,
    LeftoverPolicy,
    LostPolicy,
    OverwritePolicy,
    SwitchSettings,
)

__all__ = ["check_switch"]


def check_switch(  # noqa: PLR0913  # add()'s signature, one keyword per option
    room_id: object,
    event_type: object,
    content: object,
    *,
    delay: object,
    state_key: object,
    restart_interval: object,
    alive: object,
    on_exit: object,
    on_lost: object,
    on_leftover: object,
    on_overwrite: object,
    key: object,
    ignore_unverified_devices: object,
    priority: object,
    sticky_duration: object,
    exact_content: object,
) -> tuple[SwitchSettings, float | None]:
    """Every argument of ``add()`` checked: the settings (with the delay asked for; the manager
    lowers it to the server's maximum) and the restart interval asked for (seconds; ``None``:
    the default). Raises ``InvalidInput`` naming the first wrong argument."""
    if not isinstance(content, Mapping):
        raise InvalidInput(f"content must be a dict (a JSON object), not {type(content).__name__}")
    # The key is checked even for a state switch, which does not use it: a wrong type is a bug.
    checked_key = check_state_key(key)
    if state_key is None:
        content = {**content, SWITCH_KEY_FIELD: checked_key}
    room_id, event_type, content, state_key = check_event(room_id, event_type, content, state_key)
    delay_ms = switch_delay_ms(delay)
    interval = _checked_interval(restart_interval, delay_ms)
    settings = SwitchSettings(
        room_id,
        event_type,
        content,
        state_key,
        delay_ms,
        delay_ms,
        _checked_alive(alive),
        # A policy given as its value ("send") is that policy; anything else is refused.
        coerce_policy(ExitPolicy, on_exit, "on_exit"),
        coerce_policy(LostPolicy, on_lost, "on_lost"),
        coerce_policy(LeftoverPolicy, on_leftover, "on_leftover"),
        coerce_policy(OverwritePolicy, on_overwrite, "on_overwrite"),
        _checked_bool(ignore_unverified_devices, "ignore_unverified_devices"),
        _checked_priority(priority),
        _checked_sticky(sticky_duration, state_key),
        _checked_exact(exact_content, state_key),
    )
    return settings, interval


def _checked_interval(interval: object, delay_ms: int) -> float | None:
    """The restart interval asked for: from 100 ms to below the delay. Refused rather than
    replaced: an interval as long as the delay would let the switch fire between restarts."""
    if interval is None:
        return None
    seconds, bare = read_seconds(interval, "restart_interval", minimum=MIN_RESTART_INTERVAL_S)
    if seconds * 1000 >= delay_ms:
        raise InvalidInput(
            f"restart_interval ({seconds:g} s) must be below the delay ({delay_ms / 1000:g} s), "
            "or the switch fires between restarts; leave it out for the default, a third of "
            "the delay"
        )
    if bare:
        warn_bare_number("restart_interval", cast(float, interval), "s")
    return seconds


def _checked_alive(alive: object) -> AliveEvent | None:
    if alive is None:
        return None
    if not isinstance(alive, AliveEvent):
        raise InvalidInput(f"alive must be an AliveEvent or None, not {type(alive).__name__}")
    return AliveEvent(
        check_event_type(alive.event_type),
        check_content(alive.content),
        None if alive.state_key is None else check_state_key(alive.state_key),
    )


def _checked_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be a bool, not {type(value).__name__}")
    return value


def _checked_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidInput(f"priority must be an int, not {type(priority).__name__}")
    return priority


def _checked_exact(exact_content: object, state_key: str | None) -> bool:
    exact = _checked_bool(exact_content, "exact_content")
    if exact and state_key is None:
        raise InvalidInput(
            "exact_content is for state switches: a message switch carries its key and owner "
            "in its content"
        )
    return exact


def _checked_sticky(duration: object, state_key: str | None) -> int | None:
    if duration is None:
        return None
    if state_key is not None:
        raise InvalidInput("sticky_duration is for message switches; this one is a state event")
    return sticky_to_ms(duration)
