"""`delay_id`s are secrets: on Synapse the id alone restarts, cancels or sends the event.

So is the access token. Here is how either is shown, when it must be: shortened, or redacted out of
text a server or a proxy wrote.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import quote

__all__ = ["DelayId", "redact", "shorten"]


def shorten(secret: str) -> str:
    """A recognisable prefix of ``secret`` for logs: at most 6 characters and a third of it."""
    shown = min(6, len(secret) // 3)
    return f"{secret[:shown]}…"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret in it replaced by its :func:`shorten` form.

    A server or a proxy may echo a request back (a path with the delay_id, an Authorization
    header), as it was sent or escaped: each secret is also found percent-encoded and
    JSON-escaped. Longer secrets go first, so that one inside another is not half-replaced.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        short = shorten(secret)
        for form in {secret, quote(secret, safe="", errors="replace"), json.dumps(secret)[1:-1]}:
            text = text.replace(form, short)
    return text


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
