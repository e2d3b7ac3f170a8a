"""What one client keeps between calls: one object per client, owned by the mixin."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from nio.responses import SyncResponse

from ..responses import DelayedEventsSupportResponse
from ..support import ManagementForm

__all__ = ["ClientState", "SyncObserver"]

SyncObserver = Callable[[SyncResponse], None]


@dataclass
class ClientState:
    """What one client learned about its server, and who watches its sync."""

    support: DelayedEventsSupportResponse | None = None
    management_form: ManagementForm = ManagementForm.PATH
    lookup_supported: bool = True
    #: Held while negotiating, so that concurrent first calls ask the server once.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Rooms the client has not synced, by what the server said of their encryption: True for
    #: good, or the monotonic time an "unencrypted" answer was given.
    encryption: dict[str, bool | float] = field(default_factory=dict)
    #: Called with every sync answer (the keep-alive's state-overwrite guard).
    sync_observers: set[SyncObserver] = field(default_factory=set)

    def reset_learned(self) -> None:
        """What calls learned of the old server (fallback forms) goes with its old answer."""
        self.management_form = ManagementForm.PATH
        self.lookup_supported = True
