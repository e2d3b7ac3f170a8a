"""A fault-injecting HTTP proxy for tests: put it between a bot and its homeserver.

    async with FaultProxy(synapse_url, seed=1) as proxy:
        client = DelayedAsyncClient(proxy.url, user_id)     # the bot talks through the proxy
        proxy.faults = ProxyFaults(latency=0.2, drop_chance=0.1)
        proxy.blackhole(5.0)                                # nothing gets through for 5 s
        proxy.burst(503, count=3)                           # the next 3 requests get a 503
        proxy.heal()

Faults: added latency, random latency spikes, dropped connections (the request never reaches
the server), reset connections (the server acted, the answer is lost), bursts of an error status
or of 429s with a retry hint, and a full blackhole (requests hang unanswered) for a set time.
It listens on 127.0.0.1 only and records every request with its timing and answer.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from .loopback import LoopbackServer

__all__ = ["FaultProxy", "ProxiedRequest", "ProxyFaults"]

# Headers that describe one hop, not the message, and must not be passed on.
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length", "content-encoding",
}  # fmt: skip


@dataclass
class ProxyFaults:
    """Standing faults, applied to every request (probabilities in [0, 1], times in seconds)."""

    latency: float = 0.0
    spike_chance: float = 0.0
    spike: float = 0.0
    drop_chance: float = 0.0
    reset_chance: float = 0.0


@dataclass
class ProxiedRequest:
    """One request that passed the :class:`FaultProxy`: when, and what came of it."""

    method: str
    path: str
    started: float  # time.monotonic()
    answered: float | None = None
    status: int | None = None  # None: no answer (dropped, reset, blackholed)
    fault: str | None = None
    retry_after_ms: int | None = None


@dataclass
class _Burst:
    status: int
    left: int
    retry_after_ms: int | None = None


@dataclass
class FaultProxy(LoopbackServer):
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` (a real homeserver) that injects
    ``faults`` (latency, dropped connections, lost answers, 5xx and 429 bursts, a blackhole) and
    records every request in ``requests``. Point the bot at its ``url``."""

    upstream: str
    seed: int | None = None
    faults: ProxyFaults = field(default_factory=ProxyFaults)
    requests: list[ProxiedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._bursts: list[_Burst] = []
        self._blackhole_until = 0.0
        self._session: aiohttp.ClientSession | None = None

    # -- controlling faults ------------------------------------------------------------------

    def blackhole(self, seconds: float) -> None:
        """For ``seconds``, answer nothing: requests hang until the client gives up."""
        self._blackhole_until = time.monotonic() + seconds

    def burst(self, status: int, count: int) -> None:
        """Answer the next ``count`` requests with ``status`` (a 5xx, say); pass nothing on."""
        self._bursts.append(_Burst(status, count))

    def rate_limit(self, count: int, retry_after_ms: int) -> None:
        """Answer the next ``count`` requests with 429 and ``retry_after_ms``."""
        self._bursts.append(_Burst(429, count, retry_after_ms))

    def heal(self) -> None:
        """Remove every fault."""
        self.faults = ProxyFaults()
        self._bursts.clear()
        self._blackhole_until = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> FaultProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return await super().start()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()

    # -- proxying ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = ProxiedRequest(request.method, request.path_qs, time.monotonic())
        self.requests.append(record)
        body = await request.read()
        faults = self.faults
        delay = faults.latency
        if faults.spike_chance and self._rng.random() < faults.spike_chance:
            delay += faults.spike
        if delay:
            await asyncio.sleep(delay)
        if time.monotonic() < self._blackhole_until:
            record.fault = "blackhole"
            await asyncio.sleep(self._blackhole_until - time.monotonic())
            return self._drop(request)
        if faults.drop_chance and self._rng.random() < faults.drop_chance:
            record.fault = "drop"
            return self._drop(request)
        burst = next((b for b in self._bursts if b.left > 0), None)
        if burst is not None:
            burst.left -= 1
            record.fault = f"burst {burst.status}"
            record.status, record.answered = burst.status, time.monotonic()
            record.retry_after_ms = burst.retry_after_ms
            answer: dict[str, object] = {"errcode": "M_UNKNOWN", "error": "injected fault"}
            if burst.retry_after_ms is not None:
                answer = {
                    "errcode": "M_LIMIT_EXCEEDED",
                    "error": "injected",
                    "retry_after_ms": burst.retry_after_ms,
                }
            return web.json_response(answer, status=burst.status)
        reset = bool(faults.reset_chance) and self._rng.random() < faults.reset_chance
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            async with self._session.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as upstream:
                payload = await upstream.read()
                status = upstream.status
                answer_headers = {
                    k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP
                }
        except aiohttp.ClientError:
            record.fault = "upstream down"
            return self._drop(request)
        if reset:
            record.fault = "reset"  # the server acted; the answer is lost
            return self._drop(request)
        record.status, record.answered = status, time.monotonic()
        if status == 429:
            record.retry_after_ms = _retry_after_ms(payload)
        return web.Response(status=status, body=payload, headers=answer_headers)

    def _drop(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError  # aiohttp sends nothing for a cancelled handler


def _retry_after_ms(payload: bytes) -> int | None:
    try:
        value = json.loads(payload).get("retry_after_ms")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None
