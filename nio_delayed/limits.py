"""A homeserver's rate limits, as an operator knows them (or as Synapse sets them by default)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RateLimit", "ServerLimits"]


@dataclass(frozen=True)
class RateLimit:
    """A rate limit as Synapse configures one: ``per_second`` on average, ``burst`` at once."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if (
            isinstance(self.per_second, bool)
            or not isinstance(self.per_second, (int, float))
            or not math.isfinite(self.per_second)
            or self.per_second <= 0
            or isinstance(self.burst, bool)
            or not isinstance(self.burst, int)
            or self.burst < 1
        ):
            raise ValueError("a rate limit needs a finite per_second > 0 and a whole burst >= 1")


@dataclass(frozen=True)
class ServerLimits:
    """What the keep-alive assumes of the server before it learns better; ``None``: no limit.

    The defaults are Synapse's: ``rc_delayed_event_mgmt`` (restart, cancel, send, look-up,
    listing) and ``rc_message`` (scheduling, and every event the bot sends). The keep-alive
    learns tighter limits from the server's answers by itself, but never uses more than these:
    if your server allows more (or exempts the bot), say so here.
    """

    management: RateLimit | None = RateLimit(1.0, 5)
    scheduling: RateLimit | None = RateLimit(0.2, 10)

    @classmethod
    def unlimited(cls) -> ServerLimits:
        """A server (or a user) without rate limits: an appservice with ``rate_limited: false``,
        or a user with Synapse's per-user override."""
        return cls(None, None)
