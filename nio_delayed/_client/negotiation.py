"""The I/O of negotiation: ask the server what :func:`.decision.choose_dialect` needs, once per
client, and keep the answer in the client's state."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ErrorInfo, ErrorKind
from ..request_builders import capabilities_request, probe_request, versions_request
from ..responses import DelayedEventsSupportError, DelayedEventsSupportResponse
from ..support import Dialect, Listing
from .decision import ProbeAnswer, choose_dialect, needs_probe
from .request_path import RequestPath
from .state import ClientState

__all__ = ["Negotiation", "Server"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Server:
    """A server that supports delayed events: what the calls need to know of it."""

    dialect: Dialect
    listing: Listing
    max_delay_ms: int | None
    #: It schedules sticky delayed messages (MSC4354).
    sticky: bool = False


class Negotiation:
    def __init__(
        self, state: ClientState, path: RequestPath, homeserver: Callable[[], str]
    ) -> None:
        self._state = state
        self._path = path
        self._homeserver = homeserver

    async def support(
        self, refresh: bool = False
    ) -> DelayedEventsSupportResponse | DelayedEventsSupportError:
        """The server's support, asked once per client (or again with ``refresh``)."""
        state = self._state
        if state.support is not None and not refresh:
            return state.support  # the common case, without the lock
        async with state.lock:
            if state.support is not None and not refresh:
                return state.support
            result = await self._ask()
            if isinstance(result, DelayedEventsSupportResponse):
                state.support = result
                state.reset_learned()
                logger.info(
                    "%s: %s",
                    self._homeserver(),
                    result,
                    extra={
                        "homeserver": self._homeserver(),
                        "supported": result.supported,
                        "dialect": None if result.dialect is None else result.dialect.value,
                    },
                )
            return result

    async def require(self) -> Server | ErrorInfo:
        """The gate of every delayed-events call: nothing delayed goes to a server that does not
        advertise the feature (it would send the event at once)."""
        support = await self.support()
        if isinstance(support, DelayedEventsSupportError):
            return ErrorInfo(
                support.kind,
                f"could not learn whether the server supports delayed events: {support.message}",
                support.status_code,
                support.http_status,
                support.retry_after_ms,
                soft_logout=support.soft_logout,
            )
        if not support.supported or support.dialect is None:
            return ErrorInfo(ErrorKind.UNSUPPORTED, f"nothing was sent: {support.reason}")
        return Server(
            support.dialect,
            support.listing or Listing.MSC4140,
            support.max_delay_ms,
            support.sticky,
        )

    def learn_max_delay(self, max_delay_ms: int) -> None:
        """Older servers publish their maximum only in a refusal: remember it."""
        if self._state.support is not None:
            self._state.support = replace(self._state.support, max_delay_ms=max_delay_ms)

    async def _ask(self) -> DelayedEventsSupportResponse | DelayedEventsSupportError:
        versions = await self._path.json(versions_request())
        if isinstance(versions, ErrorInfo):
            return DelayedEventsSupportError.from_info(versions)
        capabilities: dict[str, Any] | ErrorInfo | None = await self._path.json(
            capabilities_request()
        )
        if isinstance(capabilities, ErrorInfo):
            if _transient(capabilities):
                return DelayedEventsSupportError.from_info(capabilities)
            capabilities = None  # no capability: the limits are not published
        probe = None
        if needs_probe(versions, capabilities):
            answer = await self._path.json(probe_request(f"nio-delayed-probe-{uuid.uuid4()}"))
            if isinstance(answer, ErrorInfo) and _transient(answer):
                return DelayedEventsSupportError.from_info(answer)
            probe = (
                ProbeAnswer(answer.http_status or 0, answer.errcode)
                if isinstance(answer, ErrorInfo)
                else ProbeAnswer(200)
            )
        return choose_dialect(versions, capabilities, probe)


def _transient(info: ErrorInfo) -> bool:
    """No answer, or a server failure: ask again later rather than conclude anything."""
    return info.kind is ErrorKind.NETWORK or (info.http_status or 0) >= 500
