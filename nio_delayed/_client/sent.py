"""Knowing a delayed event was sent: the sender's own copy of a fired delayed event carries its
``delay_id`` in ``unsigned`` (the merged MSC4140; Synapse 1.150 and later), so the client's sync
shows when each of its delayed events arrives. :class:`SentEvents` remembers the recent ones and
answers the calls waiting for one (``delayed_event_sent``).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

from nio.responses import SyncResponse

from ..delay_id import DelayId, shorten
from ..errors import ErrorKind
from ..responses import DelayedEventSentError, DelayedEventSentResponse
from ..validation import InvalidInput, check_delay_id, read_seconds
from ..wire import UNSIGNED_DELAY_ID_FIELDS, fired_delay_id, own_fired_events

__all__ = ["FiredMarks", "SentEvents"]

#: How many sent events are remembered for a call that begins to wait after its event arrived.
REMEMBERED = 1000


class SentEvents:
    """The client's own delayed events its sync showed sent, and the calls waiting for one."""

    def __init__(self, user_id: Callable[[], str]) -> None:
        self._user_id = user_id
        self._seen: collections.OrderedDict[str, DelayedEventSentResponse] = (
            collections.OrderedDict()
        )
        self._waiting: dict[str, set[asyncio.Future[DelayedEventSentResponse]]] = {}

    def on_sync(self, response: SyncResponse) -> None:
        for room_id, delay_id, event in own_fired_events(response, self._user_id()):
            self._sent(delay_id, room_id, event)

    def _sent(self, delay_id: str, room_id: str, source: dict[str, Any]) -> None:
        event_id, event_type = source.get("event_id"), source.get("type")
        sent = DelayedEventSentResponse(
            DelayId(delay_id),
            room_id,
            event_id if isinstance(event_id, str) else "",
            event_type if isinstance(event_type, str) else "",
            source,
        )
        self._seen[delay_id] = sent
        self._seen.move_to_end(delay_id)
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)
        for future in self._waiting.pop(delay_id, set()):
            if not future.done():
                future.set_result(sent)

    async def wait(
        self, delay_id: object, timeout: object
    ) -> DelayedEventSentResponse | DelayedEventSentError:
        """The event sent for ``delay_id``, once the sync shows it (at once if it did already),
        or ``NOT_SEEN`` after ``timeout``."""
        try:
            checked = check_delay_id(delay_id)
            seconds = _seconds(timeout)
        except InvalidInput as exc:
            return DelayedEventSentError.local(ErrorKind.INVALID, str(exc))
        seen = self._seen.get(checked)
        if seen is not None:
            return seen
        future: asyncio.Future[DelayedEventSentResponse] = (
            asyncio.get_running_loop().create_future()
        )
        waiting = self._waiting.setdefault(checked, set())
        waiting.add(future)
        try:
            return await asyncio.wait_for(future, seconds)
        except asyncio.TimeoutError:  # the builtin from 3.11, not before
            return DelayedEventSentError.local(
                ErrorKind.NOT_SEEN,
                f"the event of delayed event {shorten(checked)} was not seen in the sync within "
                f"{seconds:g} s: it is not sent yet (a server may send up to 30 s late), no sync "
                "loop is running, or the server does not mark sent delayed events (Synapse "
                "before 1.150); get_delayed_event() or delayed_events() may tell",
            )
        finally:
            waiting.discard(future)
            if not waiting and self._waiting.get(checked) is waiting:
                del self._waiting[checked]


def _seconds(timeout: object) -> float | None:
    if timeout is None:
        return None
    seconds, bare = read_seconds(timeout, "timeout", allow_zero=True)
    if bare:  # a new parameter: no bare number to keep working
        raise InvalidInput(f"timeout must be a datetime.timedelta or None, not {timeout!r}")
    return seconds


class FiredMarks:
    """Carries a fired event's ``unsigned`` delay id over to its decrypted form.

    nio replaces each encrypted timeline event of a sync by the decrypted one, built from the
    ciphertext's content alone: the server's ``unsigned`` is dropped. Taken before nio handles
    the sync and put back after, the mark stays visible to the sync observers."""

    def __init__(self, response: SyncResponse) -> None:
        self._marks: list[tuple[list[Any], int, dict[str, str]]] = []
        for info in response.rooms.join.values():
            events = info.timeline.events
            for index, event in enumerate(events):
                source = getattr(event, "source", None)
                if isinstance(source, dict) and fired_delay_id(source) is not None:
                    unsigned = source["unsigned"]
                    mark = {k: unsigned[k] for k in UNSIGNED_DELAY_ID_FIELDS if k in unsigned}
                    self._marks.append((events, index, mark))

    def restore(self) -> None:
        for events, index, mark in self._marks:
            source = getattr(events[index], "source", None)
            if isinstance(source, dict) and fired_delay_id(source) is None:
                unsigned = source.get("unsigned")
                source["unsigned"] = {**(unsigned if isinstance(unsigned, dict) else {}), **mark}
