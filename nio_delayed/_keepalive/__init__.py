"""The keep-alive engine behind :class:`nio_delayed.KeepAliveManager` (private: import the public
names from :mod:`nio_delayed`)."""

from .events import EventStream
from .machine import Backoff, SwitchState, SwitchStats
from .manager import KeepAliveManager
from .planning import Capacity
from .ports import KeepAliveClient
from .switch import (
    AliveEvent,
    DeadMansSwitch,
    ExitPolicy,
    KeepAliveError,
    LeftoverPolicy,
    LostPolicy,
    Overwrite,
    OverwritePolicy,
    SwitchArmError,
    SwitchEvent,
    SwitchEventKind,
    UnsupportedServerError,
)

__all__ = [
    "AliveEvent",
    "Backoff",
    "Capacity",
    "DeadMansSwitch",
    "EventStream",
    "ExitPolicy",
    "KeepAliveClient",
    "KeepAliveError",
    "KeepAliveManager",
    "LeftoverPolicy",
    "LostPolicy",
    "Overwrite",
    "OverwritePolicy",
    "SwitchArmError",
    "SwitchEvent",
    "SwitchEventKind",
    "SwitchState",
    "SwitchStats",
    "UnsupportedServerError",
]
