"""nio-delayed: Matrix delayed events (MSC4140) and dead-man's switches for matrix-nio bots.

from nio_delayed import DelayedAsyncClient

client = DelayedAsyncClient("https://matrix.example.org", "@bot:example.org")
...
resp = await client.room_send_delayed(room_id, "m.room.message", content, timedelta(minutes=5))
if isinstance(resp, RoomSendDelayedResponse):
    await client.restart_delayed_event(resp.delay_id)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nio-delayed")
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"

from ._keepalive import (
    AliveEvent,
    Backoff,
    Capacity,
    DeadMansSwitch,
    EventStream,
    ExitPolicy,
    KeepAliveError,
    KeepAliveManager,
    LeftoverPolicy,
    LostPolicy,
    Overwrite,
    OverwritePolicy,
    SwitchArmError,
    SwitchEvent,
    SwitchEventKind,
    SwitchState,
    SwitchStats,
    UnsupportedServerError,
)
from .clock import Clock, SystemClock
from .delay_id import DelayId
from .errors import ErrorKind
from .lifecycle import Shutdown, stop_on_signals
from .limits import RateLimit, ServerLimits
from .mixin import DelayedAsyncClient, DelayedEventsMixin
from .models import DelayedEvent, DelayedEventStatus
from .request_builders import DelayedEventAction
from .responses import (
    DelayedEventError,
    DelayedEventSentError,
    DelayedEventSentResponse,
    DelayedEventsListError,
    DelayedEventsListResponse,
    DelayedEventsSupportError,
    DelayedEventsSupportResponse,
    GetDelayedEventError,
    GetDelayedEventResponse,
    RoomPutStateDelayedError,
    RoomPutStateDelayedResponse,
    RoomSendDelayedError,
    RoomSendDelayedResponse,
    UpdateDelayedEventError,
    UpdateDelayedEventResponse,
)
from .support import Dialect, Listing
from .transport import RequestPolicy
from .validation import InvalidInput

__all__ = [
    "AliveEvent",
    "Backoff",
    "Capacity",
    "Clock",
    "DeadMansSwitch",
    "DelayId",
    "DelayedAsyncClient",
    "DelayedEvent",
    "DelayedEventAction",
    "DelayedEventError",
    "DelayedEventSentError",
    "DelayedEventSentResponse",
    "DelayedEventStatus",
    "DelayedEventsListError",
    "DelayedEventsListResponse",
    "DelayedEventsMixin",
    "DelayedEventsSupportError",
    "DelayedEventsSupportResponse",
    "Dialect",
    "ErrorKind",
    "EventStream",
    "ExitPolicy",
    "GetDelayedEventError",
    "GetDelayedEventResponse",
    "InvalidInput",
    "KeepAliveError",
    "KeepAliveManager",
    "LeftoverPolicy",
    "Listing",
    "LostPolicy",
    "Overwrite",
    "OverwritePolicy",
    "RateLimit",
    "RequestPolicy",
    "RoomPutStateDelayedError",
    "RoomPutStateDelayedResponse",
    "RoomSendDelayedError",
    "RoomSendDelayedResponse",
    "ServerLimits",
    "Shutdown",
    "SwitchArmError",
    "SwitchEvent",
    "SwitchEventKind",
    "SwitchState",
    "SwitchStats",
    "SystemClock",
    "UnsupportedServerError",
    "UpdateDelayedEventError",
    "UpdateDelayedEventResponse",
    "stop_on_signals",
]
