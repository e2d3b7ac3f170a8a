"""Telling the world what happens to switches: the log, callbacks and event streams."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable

from ..responses import DelayedEventError
from ..wire import switch_key
from .machine import SwitchState, SwitchStats
from .switch import SwitchEvent, SwitchEventKind, SwitchRuntime

__all__ = ["Emitter", "EventStream", "sum_stats", "switch_fields"]

logger = logging.getLogger(__name__)

_LOG_LEVELS = {
    SwitchEventKind.RESTART_FAILED: logging.INFO,
    SwitchEventKind.RATE_LIMITED: logging.INFO,
    SwitchEventKind.ALIVE_PUBLISHED: logging.DEBUG,
    SwitchEventKind.AT_RISK: logging.WARNING,
    SwitchEventKind.PROBABLY_FIRED: logging.WARNING,
    SwitchEventKind.LOST: logging.WARNING,
    SwitchEventKind.FIRED_CONFIRMED: logging.WARNING,
    SwitchEventKind.DELAY_LOWERED: logging.WARNING,
    SwitchEventKind.ALIVE_FAILED: logging.WARNING,
    SwitchEventKind.STALL: logging.WARNING,
    SwitchEventKind.FAILED: logging.ERROR,
    SwitchEventKind.UNAUTHORIZED: logging.ERROR,
    SwitchEventKind.OVERWRITTEN: logging.WARNING,
    SwitchEventKind.OVER_BUDGET: logging.WARNING,
    SwitchEventKind.UNDELIVERABLE: logging.WARNING,
    SwitchEventKind.FOREIGN_LEFTOVER: logging.WARNING,
}
# A switch that ended without the bot asking (fired, failed, overwritten) needs attention, whatever
# the event that says so: a kind added later cannot slip in below WARNING.
_ENDED_UNASKED = (SwitchState.FIRED, SwitchState.FAILED, SwitchState.OVERWRITTEN)


def switch_fields(
    switch: SwitchRuntime,
    kind: SwitchEventKind | None = None,
    error: DelayedEventError | None = None,
) -> dict[str, object]:
    """The structured fields of a log record about ``switch`` (docs/operators.md, "Logging"):
    what it guards, its state, the event's kind, a shortened delay_id and the error's kind.
    Never its content, a whole delay_id or a token."""
    settings = switch.settings
    key = switch_key(settings.state_key, settings.content)
    delay_id = switch.delay_id
    return {
        "room_id": settings.room_id,
        "event_type": settings.event_type,
        "switch_key": key,
        "switch_state": switch.machine.state.value,
        "event_kind": None if kind is None else kind.value,
        "delay_id_short": None if delay_id is None else delay_id.short,
        "error_kind": None if error is None else error.kind.value,
        "errcode": None if error is None else error.errcode,
        "http_status": None if error is None else error.http_status,
    }


class EventStream:
    """Switch events as an async iterator. It keeps the newest ``maxsize`` events; older ones
    are dropped (and counted in ``dropped``) if the reader falls behind."""

    def __init__(self, emitter: Emitter, maxsize: int) -> None:
        self._emitter = emitter
        self._queue: asyncio.Queue[SwitchEvent | None] = asyncio.Queue(maxsize)
        self.dropped = 0

    def put(self, event: SwitchEvent | None) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    def close(self) -> None:
        """End the iteration (also done when the manager closes)."""
        self._emitter.streams.discard(self)
        self.put(None)

    def __aiter__(self) -> AsyncIterator[SwitchEvent]:
        return self

    async def __anext__(self) -> SwitchEvent:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event


class Emitter:
    """Sends each switch event to the log, the callbacks and the open streams."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self.callbacks: list[Callable[[SwitchEvent], None]] = []
        self.streams: set[EventStream] = set()

    def stream(self, maxsize: int) -> EventStream:
        stream = EventStream(self, maxsize)
        self.streams.add(stream)
        return stream

    def close_streams(self) -> None:
        for stream in list(self.streams):
            stream.close()

    def emit(
        self,
        switch: SwitchRuntime,
        kind: SwitchEventKind,
        message: str,
        error: DelayedEventError | None = None,
    ) -> None:
        handle = switch.handle
        event = SwitchEvent(kind, handle, handle.state, message, self._now(), error)
        level = _LOG_LEVELS.get(kind, logging.INFO)
        if error is not None and kind is SwitchEventKind.STOPPED:
            level = logging.WARNING  # the exit policy could not be carried out
        if handle.state in _ENDED_UNASKED:
            level = max(level, logging.WARNING)
        if logger.isEnabledFor(level):
            fields = switch_fields(switch, kind, error)
            logger.log(level, "%r: %s: %s", handle, kind.value, message, extra=fields)
        for callback in (*self.callbacks, *switch.callbacks):
            try:
                callback(event)
            except Exception:  # a broken callback must not stop the keep-alive
                fields = switch_fields(switch, kind, error)
                logger.exception("keep-alive event callback failed", extra=fields)
        for stream in self.streams:
            stream.put(event)
        switch.state_changed()


def sum_stats(switches: Iterable[SwitchRuntime]) -> SwitchStats:
    """Counters summed over ``switches``."""
    total = SwitchStats()
    for switch in switches:
        total.add(switch.machine.stats)
    return total
