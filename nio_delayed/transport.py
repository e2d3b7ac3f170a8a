"""Send one :class:`HttpRequest` with a per-attempt timeout and a bounded number of retries.

nio's own ``AsyncClient._send`` retries 429s and time-outs without end; a dead-man's switch must
never sit in such a loop past its deadline, so delayed-event calls come through here instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .request_builders import HttpRequest

__all__ = ["HttpAnswer", "NoAnswer", "Outcome", "RequestPolicy", "Sender", "send_with_retries"]

logger = logging.getLogger("nio_delayed")


@dataclass(frozen=True)
class RequestPolicy:
    """How hard one call tries.

    ``timeout``: seconds for each attempt. ``max_attempts``: attempts in all (1 = no retry).
    ``max_retry_after``: the longest server-requested wait (429) sat through before giving up and
    returning the rate-limit error to the caller. Back-off between other retries grows from
    ``backoff_initial`` to ``backoff_max`` seconds, with jitter.
    """

    timeout: float = 10.0
    max_attempts: int = 3
    max_retry_after: float = 10.0
    backoff_initial: float = 0.25
    backoff_max: float = 4.0

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.max_attempts < 1 or self.max_retry_after < 0:
            raise ValueError("timeout must be > 0, max_attempts >= 1, max_retry_after >= 0")


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    retry_after: str | None = None

    def json(self) -> object:
        """The body as JSON, or ``None`` when it is not JSON."""
        try:
            parsed: object = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None
        return parsed


@dataclass(frozen=True)
class NoAnswer:
    """No HTTP answer. ``reached`` is False when no connection was made (nothing was sent)."""

    message: str
    reached: bool


Outcome = HttpAnswer | NoAnswer
Sender = Callable[[HttpRequest, float], Awaitable[HttpAnswer]]

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
    if isinstance(body, Mapping):
        ms = body.get("retry_after_ms")
        if isinstance(ms, int) and not isinstance(ms, bool) and ms >= 0:
            return ms / 1000
    if answer.retry_after and answer.retry_after.strip().isdigit():
        return float(answer.retry_after.strip())
    return None


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
        logger.debug(
            "%s %s -> %s in %.0f ms",
            request.method,
            request.log_path,
            outcome.status if isinstance(outcome, HttpAnswer) else outcome.message,
            (time.monotonic() - started) * 1000,
        )
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
