"""The one way a delayed-events call reaches the server and comes back typed.

As nio's ``AsyncClient._send(ResponseClass, ...)``: every public call is *check the input →
pass a gate (the server supports delayed events) → build the request → send it → parse the
answer into the call's response class*; on any step's failure, the call's error class. The
calls (:mod:`.calls`) say only what differs: their checks, their requests, their parsing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from ..errors import ErrorInfo, ErrorKind
from ..models import MalformedAnswer
from ..request_builders import HttpRequest
from ..responses import DelayedEventError
from ..transport import RequestPolicy, outcome_result, send_with_retries
from ..validation import InvalidInput
from .session import Transport

__all__ = ["RequestPath", "call"]

_A = TypeVar("_A")  # the checked input
_G = TypeVar("_G")  # what the gate lets through (the server's support, or nothing)
_R = TypeVar("_R")  # the result
_E = TypeVar("_E", bound=DelayedEventError)


class RequestPath:
    """Send a request with bounded retries; its JSON object, parsed, or what went wrong.

    ``secrets`` gives the client's own (its access token): they, and those of each request (its
    delay_id), are taken out of every error text, since a server or proxy may echo a request.
    """

    def __init__(
        self,
        transport: Transport,
        default_policy: Callable[[], RequestPolicy],
        secrets: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.transport = transport
        self._default_policy = default_policy
        self._secrets = secrets

    def policy(self, policy: RequestPolicy | None) -> RequestPolicy:
        """The call's own policy, or the client's."""
        return policy or self._default_policy()

    async def json(
        self,
        request: HttpRequest,
        policy: RequestPolicy | None = None,
        *,
        secrets: Iterable[str] = (),
    ) -> dict[str, Any] | ErrorInfo:
        """The JSON object the server answered, or what went wrong."""
        outcome = await send_with_retries(self.transport.send, request, self.policy(policy))
        return outcome_result(outcome, secrets=(*self._secrets(), *secrets), now=time.time())

    async def parsed(
        self,
        request: HttpRequest,
        parse: Callable[[dict[str, Any]], _R | ErrorInfo],
        policy: RequestPolicy | None = None,
        *,
        what: str = "answer",
        secrets: Iterable[str] = (),
    ) -> _R | ErrorInfo:
        """The answer, parsed; a malformed one is the server's error."""
        body = await self.json(request, policy, secrets=secrets)
        if isinstance(body, ErrorInfo):
            return body
        try:
            return parse(body)
        except MalformedAnswer as exc:
            return ErrorInfo(ErrorKind.SERVER_ERROR, f"malformed {what}: {exc}", http_status=200)


async def call(
    error: type[_E],
    check: Callable[[], _A],
    gate: Callable[[], Awaitable[_G | ErrorInfo]],
    act: Callable[[_A, _G], Awaitable[_R | ErrorInfo]],
) -> _R | _E:
    """One public call: bad input gives a typed ``INVALID`` error and sends nothing; a closed
    gate or a failed act gives the call's error class."""
    try:
        checked = check()
    except InvalidInput as exc:
        return error.local(ErrorKind.INVALID, str(exc))
    passed = await gate()
    if isinstance(passed, ErrorInfo):
        return error.from_info(passed)
    result = await act(checked, passed)
    return error.from_info(result) if isinstance(result, ErrorInfo) else result
