"""The local record: the switches' events this bot armed, kept on disk in a directory it names.

It is how a restarted process finds its leftovers on a server that lists no delayed events, and
evidence that a listed leftover is this bot's. One small JSON file per event, so that adding or
dropping one is a single atomic write (two processes of a rolling deploy may share the
directory). A ``delay_id`` controls its event on Synapse: the files are the owner's alone (0600,
in a 0700 directory) and are named by a hash, never by the id.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..delay_id import DelayId
from ..models import DelayedEvent, parse_delay_id

__all__ = ["RecordedSwitch", "SwitchRecord"]

logger = logging.getLogger(__name__)

#: The record's directory inside the one the bot names.
RECORD_SUBDIR = "nio-delayed-switches"
_FORMAT = "nio-delayed switch record"
_VERSION = 1


@dataclass(frozen=True)
class RecordedSwitch:
    """One event this bot armed: what it is, who armed it (``owner``) and when (Unix ms)."""

    delay_id: DelayId
    room_id: str
    event_type: str
    state_key: str | None
    content: dict[str, Any]
    delay_ms: int
    owner: str
    armed_ts: int

    def as_leftover(self) -> DelayedEvent:
        """The event as a listing would show it (its timer last known started when armed)."""
        return DelayedEvent(
            self.delay_id,
            self.room_id,
            self.event_type,
            self.content,
            self.state_key,
            self.delay_ms,
            self.armed_ts,
        )


class SwitchRecord:
    """The record of one account's switches in ``directory`` (created if missing)."""

    def __init__(self, directory: str | os.PathLike[str], user_id: str) -> None:
        self.path = Path(directory) / RECORD_SUBDIR
        self._user_id = user_id
        self._known: set[str] = set()

    def load(self) -> list[RecordedSwitch]:
        """Every event recorded for this account. A file that cannot be read is skipped (and
        said, without its content)."""
        found: list[RecordedSwitch] = []
        if not self.path.is_dir():
            return found
        for file in sorted(self.path.glob("*.json")):
            try:
                entry = _parse(json.loads(file.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("switch record: skipped %s: %s", file.name, type(exc).__name__)
                continue
            if entry is not None and entry[0] == self._user_id:
                found.append(entry[1])
                self._known.add(entry[1].delay_id)
        return found

    def __contains__(self, delay_id: object) -> bool:
        return delay_id in self._known

    def keep(self, entry: RecordedSwitch) -> None:
        """Record an event this bot armed or adopted (atomically: a crash leaves no file or the
        whole one, never half of one)."""
        self._known.add(entry.delay_id)
        body = {"format": _FORMAT, "version": _VERSION, "user_id": self._user_id}
        body.update(_fields(entry))
        temporary: str | None = None
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkstemp creates the file 0600, before anything is written into it.
            handle, temporary = tempfile.mkstemp(dir=self.path, prefix=".", suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(body, out)
            # No fsync: the record is for a process that dies, and the system keeps what it
            # wrote; a machine that loses power is back after the delay, when the event fired.
            # (It would stall the event loop on a busy disk at every arming.)
            os.replace(temporary, self._file(entry.delay_id))
        except OSError as exc:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
            logger.warning(
                "switch record: could not write to %s (%s): if this process dies now, the "
                "event of the switch in %s cannot be found again and fires by itself",
                self.path,
                exc.strerror or type(exc).__name__,
                entry.room_id,
            )

    def drop(self, delay_ids: Iterable[str]) -> None:
        """Forget events that are ended (sent, cancelled, gone)."""
        for delay_id in delay_ids:
            self._known.discard(delay_id)
            try:
                self._file(delay_id).unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("switch record: could not remove an entry: %s", exc.strerror)

    def _file(self, delay_id: str) -> Path:
        digest = hashlib.sha256(f"{self._user_id}\n{delay_id}".encode()).hexdigest()[:32]
        return self.path / f"{digest}.json"


def _fields(entry: RecordedSwitch) -> dict[str, Any]:
    return {
        "delay_id": str(entry.delay_id),
        "room_id": entry.room_id,
        "type": entry.event_type,
        "state_key": entry.state_key,
        "content": entry.content,
        "delay_ms": entry.delay_ms,
        "owner": entry.owner,
        "armed_ts": entry.armed_ts,
    }


def _parse(body: Any) -> tuple[str, RecordedSwitch] | None:
    if not isinstance(body, dict) or body.get("format") != _FORMAT:
        raise ValueError("not a switch record")
    if body.get("version") != _VERSION:
        return None  # written by another version of the library: not ours to read
    state_key = body["state_key"]
    if not (
        isinstance(body["content"], dict)
        and (state_key is None or isinstance(state_key, str))
        and all(isinstance(body[k], str) for k in ("user_id", "delay_id", "room_id", "type"))
        and all(isinstance(body[k], int) for k in ("delay_ms", "armed_ts"))
        and isinstance(body["owner"], str)
    ):
        raise TypeError("a field has the wrong type")
    entry = RecordedSwitch(
        parse_delay_id(body["delay_id"]),
        body["room_id"],
        body["type"],
        state_key,
        body["content"],
        body["delay_ms"],
        body["owner"],
        body["armed_ts"],
    )
    return body["user_id"], entry
