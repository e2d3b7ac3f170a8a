"""`delay_id`s are secrets: on Synapse the id alone restarts, cancels or sends the event."""

from __future__ import annotations

__all__ = ["DelayId", "shorten"]


def shorten(secret: str) -> str:
    """A recognisable prefix of ``secret`` for logs: at most 6 characters and a third of it."""
    shown = min(6, len(secret) // 3)
    return f"{secret[:shown]}…"


class DelayId(str):
    """A server-issued ``delay_id``. It is a plain ``str`` everywhere except in ``repr``.

    ``repr`` (and so every dataclass, log record or traceback that shows it) prints only a short
    prefix; ``str(delay_id)`` is the whole id, for the requests that need it.
    """

    __slots__ = ()

    @property
    def short(self) -> str:
        return shorten(self)

    def __repr__(self) -> str:
        return f"DelayId({self.short!r})"
