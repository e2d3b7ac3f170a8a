"""The HTTP session of delayed-event calls, behind one narrow interface.

:class:`Transport` sends one :class:`HttpRequest` and returns the raw answer; everything above it
(retries, errors, parsing) is the same whatever carries the bytes. Tests replace it with an
object of their own, as one replaces an httpx transport.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Protocol

import aiohttp
from aiohttp_socks import ProxyConnector
from nio.client.async_client import AsyncClient

from ..request_builders import HttpRequest
from ..transport import HttpAnswer, read_answer

__all__ = ["AiohttpTransport", "Transport"]


class Transport(Protocol):
    """Sends one request to the homeserver. Raises aiohttp's errors (or ``TimeoutError``) when
    there is no answer: the request path turns them into ``NETWORK`` errors."""

    async def send(self, request: HttpRequest, timeout: float) -> HttpAnswer: ...

    async def close(self) -> None: ...


class AiohttpTransport:
    """A session of its own (through nio's proxy, if any), with the nio client's homeserver,
    access token, custom headers and certificate checks, read at each call.

    A long-polling sync then never holds the connection a restart needs, and restarts skip the
    per-request tracing nio sets up on its session.
    """

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._session: aiohttp.ClientSession | None = None
        #: For requests that must not go twice (see :meth:`_session_for`), made when needed.
        self._once_session: aiohttp.ClientSession | None = None

    async def send(self, request: HttpRequest, timeout: float) -> HttpAnswer:
        client = self._client
        headers = {"Content-Type": "application/json"}
        # The merged MSC4140 authenticates management calls; Synapse accepts them without a
        # token too, but then rate-limits by IP rather than by user. Lookups always need it.
        if client.access_token:
            headers["Authorization"] = f"Bearer {client.access_token}"
        if client.config.custom_headers:
            headers.update(client.config.custom_headers)
        async with self._session_for(request).request(
            request.method,
            client.homeserver + request.path,
            data=_json_bytes(request.body),
            headers=headers,
            # nio's None means "default": verify certificates.
            ssl=True if client.ssl is None else client.ssl,
            timeout=_timeout(timeout),
            # A redirect is an answer, refused by the request path: the request, its token
            # and its content go nowhere but the homeserver.
            allow_redirects=False,
        ) as response:
            return await read_answer(response)

    async def close(self) -> None:
        sessions = (self._session, self._once_session)
        self._session = self._once_session = None
        for session in sessions:
            if session is not None:
                await session.close()

    def _session_for(self, request: HttpRequest) -> aiohttp.ClientSession:
        """aiohttp sends a PUT again by itself, once, when its connection drops before the
        answer (HTTP lets a client retry an idempotent method). A legacy ``/state`` PUT is not
        idempotent: sent twice, it schedules two delayed events, one of them left to fire. Such
        requests go through a session that never does that: the request path decides."""
        if request.idempotent:
            if self._session is None or self._session.closed:
                self._session = self._new_session()
            return self._session
        if self._once_session is None or self._once_session.closed:
            self._once_session = self._new_session()
            # There is no public option; aiohttp's own test client turns it off the same way.
            self._once_session._retry_connection = False  # noqa: SLF001
        return self._once_session

    def _new_session(self) -> aiohttp.ClientSession:
        proxy = self._client.proxy
        connector = ProxyConnector.from_url(proxy) if proxy else None
        return aiohttp.ClientSession(connector=connector)


@functools.lru_cache(maxsize=256)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


def _json_bytes(body: dict[str, Any] | None) -> bytes | None:
    if not body:
        return None if body is None else b"{}"  # restarts: the common case
    return json.dumps(body, separators=(",", ":")).encode()
