"""Send one :class:`HttpRequest` with a per-attempt timeout and a bounded number of retries;
read its answer with a bounded size, and turn it into a result or a typed error.

nio's own ``AsyncClient._send`` retries 429s and time-outs without end; a dead-man's switch must
never sit in such a loop past its deadline, so delayed-event calls come through here instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .delay_id import redact
from .errors import ErrorInfo, ErrorKind, classify_error, retry_after_ms
from .request_builders import HttpRequest
from .validation import InvalidInput

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_POLICY_SECONDS",
    "HttpAnswer",
    "NoAnswer",
    "Outcome",
    "RequestPolicy",
    "Sender",
    "outcome_result",
    "read_answer",
    "send_with_retries",
]

logger = logging.getLogger(__name__)

#: The most of an answer's body that is read (after decompression). Every answer of the
#: protocol is far smaller, but a listing of many events; a longer one is a server error.
MAX_ANSWER_BYTES = 1 << 20
#: The longest any one duration of a :class:`RequestPolicy` may be: one hour. A longer wait is
#: a hang for a dead-man's switch, whose delays are minutes.
MAX_POLICY_SECONDS = 3600.0


@dataclass(frozen=True)
class RequestPolicy:
    """How hard one call tries.

    ``timeout``: seconds for each attempt. ``max_attempts``: attempts in all (1 = no retry).
    ``max_retry_after``: the longest server-requested wait (429) sat through before giving up and
    returning the rate-limit error to the caller. Back-off between other retries grows from
    ``backoff_initial`` to ``backoff_max`` seconds, with jitter.

    Every duration is a finite number of seconds, at most an hour (``MAX_POLICY_SECONDS``), and
    ``timeout`` above 0; ``max_attempts`` is an int from 1 to 100. Anything else raises
    ``InvalidInput`` (a ``ValueError``) here, rather than hang a call later.
    """

    timeout: float = 10.0
    max_attempts: int = 3
    max_retry_after: float = 10.0
    backoff_initial: float = 0.25
    backoff_max: float = 4.0

    def __post_init__(self) -> None:
        # Refused here, not when a call hangs: NaN compares false with everything, so it and
        # infinity would pass any later "<=" test and wait without end.
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise InvalidInput(f"max_attempts must be an int, not {self.max_attempts!r}")
        if not 1 <= self.max_attempts <= 100:
            raise InvalidInput(f"max_attempts must be from 1 to 100, not {self.max_attempts}")
        _seconds("timeout", self.timeout, positive=True)
        _seconds("max_retry_after", self.max_retry_after)
        _seconds("backoff_initial", self.backoff_initial)
        _seconds("backoff_max", self.backoff_max)


def _seconds(name: str, value: object, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{name} must be a number of seconds, not {value!r}")
    low = "above 0" if positive else "at least 0"
    if not math.isfinite(value) or not 0 <= value <= MAX_POLICY_SECONDS or (positive and not value):
        raise InvalidInput(
            f"{name} must be {low} and at most {MAX_POLICY_SECONDS:g} seconds, not {value!r}"
        )


@dataclass(frozen=True)
class HttpAnswer:
    """An HTTP answer. ``location`` is a redirect's target (never followed); ``oversized`` says
    the body was longer than the reader's limit and was not read (``body`` is then empty).
    The body stays out of ``repr``: a server may echo secrets in it."""

    status: int
    body: bytes = field(repr=False)
    retry_after: str | None = None
    location: str | None = field(default=None, repr=False)
    oversized: bool = False

    def json(self) -> object:
        """The body as JSON, or ``None`` when it is not JSON."""
        try:
            parsed: object = json.loads(self.body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return None
        return parsed


@dataclass(frozen=True)
class NoAnswer:
    """No HTTP answer. ``reached`` is False when no connection was made (nothing was sent)."""

    message: str
    reached: bool


Outcome = HttpAnswer | NoAnswer
Sender = Callable[[HttpRequest, float], Awaitable[HttpAnswer]]


async def read_answer(
    response: aiohttp.ClientResponse, limit: int = MAX_ANSWER_BYTES
) -> HttpAnswer:
    """The answer with its body read up to ``limit`` bytes, counted after decompression (a small
    compressed body can hide a huge one). Past the limit, reading stops: ``oversized``.

    Make the request with ``allow_redirects=False``: a redirect is then an answer like any other,
    its ``Location`` kept in ``location``, and :func:`outcome_result` refuses it.
    """
    headers = response.headers
    status, retry_after, location = (
        response.status,
        headers.get("Retry-After"),
        headers.get("Location"),
    )
    declared = response.content_length
    if declared is not None and declared > limit:
        return HttpAnswer(status, b"", retry_after, location, oversized=True)
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            return HttpAnswer(status, b"", retry_after, location, oversized=True)
    return HttpAnswer(status, bytes(body), retry_after, location)


def outcome_result(
    outcome: Outcome, *, secrets: Iterable[str] = (), now: float | None = None
) -> dict[str, Any] | ErrorInfo:
    """The JSON object a successful answer carries, or what went wrong. Never raises.

    ``secrets`` (the access token, the delay_ids the client knows) are taken out of every text
    that reaches the error; ``now`` (Unix seconds) reads a ``Retry-After`` date.
    """
    secrets = tuple(secrets)
    if isinstance(outcome, NoAnswer):
        return ErrorInfo(ErrorKind.NETWORK, redact(outcome.message, secrets))
    status = outcome.status
    if outcome.oversized:
        return ErrorInfo(
            ErrorKind.SERVER_ERROR,
            f"HTTP {status} with a body too long to read; no answer of the protocol is that long",
            http_status=status,
        )
    if 300 <= status < 400:
        target = redact(_origin(outcome.location), secrets)
        return ErrorInfo(
            ErrorKind.SERVER_ERROR,
            f"HTTP {status}: the server redirects to {target}; redirects are not followed, so "
            "that no request and no event content goes anywhere but the homeserver (if it has "
            "moved, give the client its new URL)",
            http_status=status,
        )
    if not 200 <= status < 300:
        return classify_error(status, outcome.body, outcome.retry_after, now=now, secrets=secrets)
    body = outcome.json()
    if not isinstance(body, dict):
        return ErrorInfo(
            ErrorKind.SERVER_ERROR,
            f"HTTP {status} with a body that is not a JSON object",
            http_status=status,
        )
    return body


def _origin(location: str | None) -> str:
    """Where a redirect points, told without its path and query (they may hold secrets)."""
    try:
        url = urlsplit(location or "")
        host, port = url.hostname, url.port  # the port is checked here: ValueError
    except ValueError:
        return "an unreadable location"
    if not url.scheme or not host:
        return "another path on the same server"
    return f"{url.scheme}://{host}" + ("" if port is None else f":{port}")


_RETRYABLE_STATUS = {502, 503, 504}


def _should_retry(request: HttpRequest, policy: RequestPolicy) -> Callable[[Outcome], bool]:
    def decide(outcome: Outcome) -> bool:
        if isinstance(outcome, NoAnswer):
            # Unreached: nothing was sent. Reached but unanswered: it may have acted.
            return not outcome.reached or request.idempotent
        if outcome.status == 429:
            wait = _retry_after_seconds(outcome)
            return wait is not None and wait <= policy.max_retry_after
        return outcome.status in _RETRYABLE_STATUS and request.idempotent

    return decide


def _retry_after_seconds(answer: HttpAnswer) -> float | None:
    body = answer.json()
    ms = retry_after_ms(
        body if isinstance(body, Mapping) else None, answer.retry_after, time.time()
    )
    return None if ms is None else ms / 1000


def _wait(policy: RequestPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(
        multiplier=policy.backoff_initial, max=policy.backoff_max, jitter=policy.backoff_initial
    )

    def wait(state: RetryCallState) -> float:
        outcome = state.outcome.result() if state.outcome else None
        if isinstance(outcome, HttpAnswer) and outcome.status == 429:
            hinted = _retry_after_seconds(outcome)
            if hinted is not None:
                return hinted
        return backoff(state)

    return wait


def _log_request(request: HttpRequest, outcome: Outcome, elapsed_ms: float) -> None:
    status = outcome.status if isinstance(outcome, HttpAnswer) else None
    logger.debug(
        "%s %s -> %s in %.0f ms",
        request.method,
        request.log_path,
        outcome.message if isinstance(outcome, NoAnswer) else status,
        elapsed_ms,
        extra={
            "http_method": request.method,
            "http_path": request.log_path,  # its delay_id shortened
            "http_status": status,
            "duration_ms": round(elapsed_ms, 1),
        },
    )


async def send_with_retries(sender: Sender, request: HttpRequest, policy: RequestPolicy) -> Outcome:
    """The last outcome after at most ``policy.max_attempts`` attempts; never raises on I/O."""

    async def attempt() -> Outcome:
        started = time.monotonic()
        try:
            answer = await sender(request, policy.timeout)
        except aiohttp.ClientConnectorError as exc:
            outcome: Outcome = NoAnswer(f"could not connect: {exc.os_error}", reached=False)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            outcome = NoAnswer(f"no answer within {policy.timeout:g} s", reached=True)
        except aiohttp.ClientError as exc:
            outcome = NoAnswer(f"connection failed: {type(exc).__name__}", reached=True)
        else:
            outcome = answer
        if logger.isEnabledFor(logging.DEBUG):  # every restart passes here
            _log_request(request, outcome, (time.monotonic() - started) * 1000)
        return outcome

    if policy.max_attempts == 1:
        return await attempt()  # the keep-alive's case: no retry loop to build
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=_wait(policy),
        retry=retry_if_result(_should_retry(request, policy)),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        reraise=True,
    )
    result: Outcome = await retrying(attempt)
    return result
