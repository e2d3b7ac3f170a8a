"""A fake homeserver that speaks the merged MSC4140 (dialects B and C) and MSC4486, for tests.

No installable server speaks these yet, so tests of them run against this fake. By default it
follows the merged MSC4140: ``PUT .../delayed_event/{type}/{txnId}`` with ``delay``,
authenticated ``POST .../delayed_events/{id}/{action}``, a look-up with finalised events kept,
409 for an action that conflicts with the outcome, 200 for one that repeats it, the
delay-too-large code of the prefix asked (``ORG.MATRIX.MSC4140_MAX_DELAY_EXCEEDED`` unstable,
``M_MAX_DELAY_EXCEEDED`` stable), and no listing of its own: listing is MSC4486's
(``org.matrix.msc4486``, filters and pagination). ``revision="draft"`` is the MSC4140 draft of
before the merge: management without a token, one delay-too-large code, and MSC4140's own
listing. Either way, a fired event's ``unsigned`` delay id is shown to its sender only.
``sticky=True`` adds sticky messages (MSC4354), delayed or not, as Synapse has them: the
``org.matrix.msc4354.sticky_duration_ms`` query parameter, and ``msc4354_sticky`` on the event
once it is sent.

Like a server without the feature, its plain ``/send`` and ``/state`` ignore the legacy delay
parameter and send at once, so a test can prove a client never relied on it.

It records every request and can inject faults (status codes, latency, dropped connections)::

    async with FakeHomeserver() as server:
        token = server.add_user("@bot:fake")
        server.inject(Fault(path_contains="/restart", status=503, times=2))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from ..clock import Clock, TimerHandle, wall_ms
from ..limits import RateLimit, ServerLimits
from .loopback import LoopbackServer

__all__ = ["FakeHomeserver", "Fault", "RecordedRequest"]

UNSTABLE = "/_matrix/client/unstable/org.matrix.msc4140"
MSC4486_UNSTABLE = "/_matrix/client/unstable/org.matrix.msc4486"
_PAGE_SIZE = 10
_MSC4486_STATUSES = ("scheduled", "sent", "cancelled", "failed")

Revision = Literal["merged", "draft"]


@dataclass
class Fault:
    """Make matching requests fail. ``times`` counts down; ``None`` means for ever.

    ``latency`` (seconds, real time) is waited first, before the server acts: a request that
    reaches it late. Then ``drop`` closes the connection without an answer, or
    ``status``/``body``/``headers`` answer instead of the real handler (``status=200`` to
    ``/restart`` is a server that says it restarted an event it never touched, even one it has
    sent). ``drop_answer`` lets the server act and then loses its answer; ``answer_latency``
    (seconds, real time) lets it act and then holds the answer back that long: a server that
    answers late. With none of these, the request is only delayed.
    """

    path_contains: str = ""
    method: str | None = None
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    latency: float = 0.0
    drop: bool = False
    drop_answer: bool = False
    answer_latency: float = 0.0
    times: int | None = 1
    #: The share of matching requests it meets, at random (the server's ``seed``).
    chance: float = 1.0

    def matches(self, request: web.Request) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method is not None and request.method != self.method:
            return False
        return self.path_contains in request.path_qs


@dataclass
class RecordedRequest:
    """One request the :class:`FakeHomeserver` received, and its answer."""

    method: str
    path: str  # decoded path with the raw query string
    body: Any
    authenticated: bool
    at: float  # when it arrived, on the server's clock (its FakeClock, or the event loop's)
    fault: Fault | None = None  # the fault that met it, if one did
    status: int | None = None  # the status it was answered with; None if dropped
    answer: Any = None  # the JSON it was answered with


@dataclass
class _Delayed:
    delay_id: str
    owner: str
    room_id: str
    type: str
    state_key: str | None
    content: dict[str, Any]
    delay: int
    running_since: int
    timer: TimerHandle | None = None
    outcome: str | None = None  # "send" or "cancel"
    event_id: str | None = None
    error: dict[str, str] | None = None
    finalised_ts: int | None = None
    sticky_duration_ms: int | None = None

    @property
    def status(self) -> str:
        """As MSC4486 names it."""
        if self.outcome is None:
            return "scheduled"
        if self.error is not None:
            return "failed"
        return "sent" if self.outcome == "send" else "cancelled"

    @property
    def due_ts(self) -> int:
        """When it was to be sent, whatever became of it: what listings order and bound by
        (MSC4486's send time, ``delayed_since_ts + delay_ms``)."""
        return self.running_since + self.delay

    def as_json(self, revision: Revision) -> dict[str, Any]:
        """The merged shape (``delay_ms``, ``delayed_since_ts``, a nested ``finalised``), or
        the draft's (``delay``, ``running_since``, the outcome flat on the event)."""
        merged = revision == "merged"
        obj: dict[str, Any] = {
            "delay_id": self.delay_id,
            "room_id": self.room_id,
            "type": self.type,
            "delay_ms" if merged else "delay": self.delay,
            "delayed_since_ts" if merged else "running_since": self.running_since,
            "content": self.content,
        }
        if self.state_key is not None:
            obj["state_key"] = self.state_key
        if self.finalised_ts is None:
            return obj
        outcome: dict[str, Any] = {
            "finalised_ts" if merged else "origin_server_ts": self.finalised_ts
        }
        for name in ("event_id", "error"):
            if getattr(self, name) is not None:
                outcome[name] = getattr(self, name)
        if merged:
            obj["finalised"] = outcome
        else:
            obj.update(outcome)
        return obj


def _error(
    status: int,
    errcode: str,
    message: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    return web.json_response(
        {"errcode": errcode, "error": message, **extra}, status=status, headers=headers
    )


def _scheduling_body(body: object) -> tuple[int, dict[str, Any], str | None] | web.Response:
    """The delay, content and state key of a scheduling request, or the error it is answered."""
    if not isinstance(body, dict):
        return _error(400, "M_BAD_JSON", "Body must be a JSON object")
    delay = body.get("delay", body.get("delay_ms"))
    if isinstance(delay, bool) or not isinstance(delay, int) or delay <= 0:
        return _error(400, "M_INVALID_PARAM", "delay must be a positive integer")
    content, state_key = body.get("content"), body.get("state_key")
    if not isinstance(content, dict):
        return _error(400, "M_BAD_JSON", "content must be a JSON object")
    if state_key is not None and not isinstance(state_key, str):
        return _error(400, "M_BAD_JSON", "state_key must be a string")
    return delay, content, state_key


class FakeHomeserver(LoopbackServer):
    """An aiohttp homeserver on 127.0.0.1 with delayed events per the merged MSC.

    ``stable``/``unstable``: which prefixes it serves and advertises. ``delayed_events=False``
    makes a server without the feature. ``max_delay_ms``/``max_scheduled``: its limits.
    ``management_rate=(per_second, burst)`` rate-limits restart/cancel/send like Synapse's
    ``rc_delayed_event_mgmt``, answering 429 with ``retry_after_ms``.
    ``state_overwrite_rule=True`` applies the rule the merged MSC moved to its alternatives (and
    Synapse keeps): a state write cancels other users' delayed events for the same state.
    ``revision``: ``"merged"`` (MSC4140 as merged) or ``"draft"`` (as before the merge; see the
    module's description). ``msc4486``/``msc4486_stable``: serve and advertise the MSC4486
    listing under its unstable prefix / on its stable path. ``sticky``: advertise and accept
    sticky delayed messages (MSC4354); without it the parameter is ignored, as by a server that
    does not know it.

    It also serves enough of the room API for a bot: ``/state`` reads (``format=event``) and a
    ``/sync`` that shows every room's new events to every user (no membership is modelled).
    """

    def __init__(
        self,
        *,
        stable: bool = True,
        unstable: bool = True,
        delayed_events: bool = True,
        max_delay_ms: int | None = 86_400_000,
        max_scheduled: int | None = 100,
        clock: Clock | None = None,
        management_rate: tuple[float, int] | None = None,
        seed: int | None = None,
        state_overwrite_rule: bool = False,
        revision: Revision = "merged",
        msc4486: bool = True,
        msc4486_stable: bool = False,
        sticky: bool = False,
    ) -> None:
        self.stable = stable and delayed_events
        self.unstable = unstable and delayed_events
        self.revision = revision
        self.msc4486 = msc4486 and delayed_events
        self.msc4486_stable = msc4486_stable and delayed_events
        self.sticky = sticky
        self.max_delay_ms = max_delay_ms
        self.max_scheduled = max_scheduled
        #: Delayed events fire on this clock (a FakeClock in keep-alive tests).
        self.clock = clock
        self.management_rate = management_rate
        self.state_overwrite_rule = state_overwrite_rule
        self._rng = random.Random(seed)
        self._bucket: tuple[float, float] | None = None  # (tokens, at)
        self.requests: list[RecordedRequest] = []
        #: Events that reached a room: ``{"room_id", "type", "content", "event_id", ...}``.
        self.room_events: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self._users: dict[str, str] = {}  # token -> user id
        self._logged_out: dict[str, bool] = {}  # token -> soft logout
        self._delayed: dict[str, _Delayed] = {}
        self._txns: dict[tuple[str, str], str] = {}
        self._state: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._new_event = asyncio.Event()

    @property
    def limits(self) -> ServerLimits:
        """Its rate limits, as a client should be told them: only management is limited."""
        if self.management_rate is None:
            return ServerLimits.unlimited()
        per_second, burst = self.management_rate
        return ServerLimits(management=RateLimit(per_second, burst), scheduling=None)

    def add_user(self, user_id: str) -> str:
        """Register ``user_id``; returns its access token."""
        token = secrets.token_urlsafe(16)
        self._users[token] = user_id
        return token

    def log_out(self, token: str, soft_logout: bool = False) -> None:
        """End an access token, as an admin, an expiry or a password change does: requests
        with it are answered 401 ``M_UNKNOWN_TOKEN`` (with ``soft_logout`` if asked)."""
        self._users.pop(token, None)
        self._logged_out[token] = soft_logout

    def inject(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def scheduled(self) -> list[dict[str, Any]]:
        """The delayed events still scheduled, as the lookup endpoint shows them."""
        return [d.as_json(self.revision) for d in self._delayed.values() if d.outcome is None]

    def requests_to(self, path_contains: str) -> list[RecordedRequest]:
        return [r for r in self.requests if path_contains in r.path]

    def fire(self, delay_id: str) -> None:
        """Send a scheduled delayed event now, as its timer would."""
        self._finalise(self._delayed[delay_id], "send")

    def cancel(self, delay_id: str) -> None:
        """Cancel a scheduled delayed event behind the client's back (another user's state
        write, an admin)."""
        self._finalise(self._delayed[delay_id], "cancel")

    def fail(self, delay_id: str, errcode: str = "M_LIMIT_EXCEEDED") -> None:
        """Finalise a scheduled delayed event with an error, as a server does when its send is
        refused at the due time (a rate limit, lost power): it is not retried."""
        delayed = self._delayed[delay_id]
        delayed.error = {"errcode": errcode, "error": "The delayed event could not be sent."}
        self._finalise(delayed, "cancel")

    def forget(self, delay_id: str) -> None:
        """Drop every record of a delayed event, as Synapse does once it is finalised."""
        delayed = self._delayed.pop(delay_id)
        if delayed.timer is not None:
            delayed.timer.cancel()

    # -- lifecycle -------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_inject])
        self._add_routes(app)
        return app

    async def close(self) -> None:
        for delayed in self._delayed.values():
            if delayed.timer is not None:
                delayed.timer.cancel()
        await super().close()

    # -- plumbing --------------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        # Every variable segment is `[^/]+`: aiohttp's default (`[^{}/]+`) would not route an
        # event type or id holding a brace, which Matrix allows.
        app.router.add_get("/_matrix/client/versions", self._versions)
        app.router.add_get("/_matrix/client/v3/capabilities", self._capabilities)
        app.router.add_put(
            "/_matrix/client/v3/rooms/{room:[^/]+}/send/{type:[^/]+}/{txn:[^/]+}", self._send
        )
        app.router.add_put(
            "/_matrix/client/v3/rooms/{room:[^/]+}/state/{type:[^/]+}/{key:.*}", self._put_state
        )
        app.router.add_get(
            "/_matrix/client/v3/rooms/{room:[^/]+}/state/{type:[^/]+}/{key:.*}", self._get_state
        )
        app.router.add_get("/_matrix/client/v3/sync", self._sync)
        prefixes = []
        if self.stable:
            prefixes.append(("/_matrix/client/v3", "/_matrix/client/v1"))
        if self.unstable:
            prefixes.append((UNSTABLE, UNSTABLE))
        listings = []
        if self.msc4486_stable:
            listings.append("/_matrix/client/v1")
        if self.msc4486:
            listings.append(MSC4486_UNSTABLE)
        for schedule, manage in prefixes:
            app.router.add_put(
                f"{schedule}/rooms/{{room:[^/]+}}/delayed_event/{{type:[^/]+}}/{{txn:[^/]+}}",
                self._schedule,
            )
            app.router.add_post(
                f"{manage}/delayed_events/{{id:[^/]+}}/{{action:[^/]+}}", self._update
            )
            app.router.add_get(f"{manage}/delayed_events/{{id:[^/]+}}", self._lookup)
            # The merged MSC4140 has no listing: MSC4486 took it over.
            if self.revision == "draft" and manage not in listings:
                app.router.add_get(f"{manage}/delayed_events", self._list)
        for prefix in listings:
            app.router.add_get(f"{prefix}/delayed_events", self._list_msc4486)

    @web.middleware
    async def _record_and_inject(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = await request.text()
        fault = next(
            (
                f
                for f in self.faults
                if f.matches(request) and (f.chance >= 1 or self._rng.random() < f.chance)
            ),
            None,
        )
        record = RecordedRequest(
            request.method,
            request.path_qs,
            body,
            request.headers.get("Authorization") is not None,
            self._now(),
            fault,
        )
        self.requests.append(record)
        # A token logged out is refused before anything else, as a server checks it first.
        refused = self._refuse_logged_out(request)
        response = refused if refused is not None else await self._answer(request, handler, fault)
        record.status = response.status
        if isinstance(response, web.Response) and response.content_type == "application/json":
            assert response.text is not None
            record.answer = json.loads(response.text)
        return response

    async def _answer(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        fault: Fault | None,
    ) -> web.StreamResponse:
        if fault is not None:
            faulted = await self._faulted(request, handler, fault)
            if faulted is not None:
                return faulted
        return await self._handle(request, handler)

    async def _handle(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed:
            return _error(405, "M_UNRECOGNIZED", "Unrecognized request")
        except web.HTTPNotFound:
            return _error(404, "M_UNRECOGNIZED", "Unrecognized request")

    async def _faulted(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        fault: Fault,
    ) -> web.StreamResponse | None:
        """The answer ``fault`` gives instead of the handler's, or None to let it answer."""
        if fault.times is not None:
            fault.times -= 1
        if fault.latency:
            await asyncio.sleep(fault.latency)
        if fault.answer_latency:
            answer = await self._handle(request, handler)
            await asyncio.sleep(fault.answer_latency)
            return answer
        if fault.drop_answer:
            await handler(request)
        if fault.drop or fault.drop_answer:
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError  # aiohttp drops a cancelled handler's answer
        if fault.status is None:
            return None
        if isinstance(fault.body, str):
            return web.Response(status=fault.status, text=fault.body, headers=fault.headers)
        return web.json_response(fault.body or {}, status=fault.status, headers=fault.headers)

    def _refuse_logged_out(self, request: web.Request) -> web.Response | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self._logged_out:
            return None
        body: dict[str, Any] = {"errcode": "M_UNKNOWN_TOKEN", "error": "Unknown access token"}
        if self._logged_out[token]:
            body["soft_logout"] = True
        return web.json_response(body, status=401)

    def _now(self) -> float:
        return self.clock.now() if self.clock is not None else asyncio.get_running_loop().time()

    def _user(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return self._users.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None

    # -- handlers --------------------------------------------------------------------------

    async def _versions(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "versions": ["v1.11", "v1.12"],
                "unstable_features": {
                    "org.matrix.msc4140": self.unstable,
                    "org.matrix.msc4140.stable": self.stable,
                    "org.matrix.msc4486": self.msc4486,
                    "org.matrix.msc4486.stable": self.msc4486_stable,
                    _STICKY_FLAG: self.sticky,
                },
            }
        )

    async def _capabilities(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _error(401, "M_MISSING_TOKEN", "Missing access token")
        limits = {
            k: v
            for k, v in (("max_delay_ms", self.max_delay_ms), ("max_scheduled", self.max_scheduled))
            if v is not None
        }
        capabilities: dict[str, Any] = {}
        if self.stable:
            capabilities["m.delayed_events"] = limits
        if self.unstable:
            capabilities["org.matrix.msc4140.delayed_events"] = limits
        return web.json_response({"capabilities": capabilities})

    async def _send(self, request: web.Request) -> web.Response:
        # A server without the feature ignores ?org.matrix.msc4140.delay and sends at once.
        return await self._send_now(request, state_key=None)

    async def _put_state(self, request: web.Request) -> web.Response:
        return await self._send_now(request, state_key=request.match_info["key"])

    async def _get_state(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _error(401, "M_MISSING_TOKEN", "Missing access token")
        key = (request.match_info["room"], request.match_info["type"], request.match_info["key"])
        event = self._state.get(key)
        if event is None:
            return _error(404, "M_NOT_FOUND", "Event not found.")
        return web.json_response(
            _seen_by(event, self._user(request))
            if request.query.get("format") == "event"
            else event["content"]
        )

    async def _sync(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _error(401, "M_MISSING_TOKEN", "Missing access token")
        try:
            since = int(request.query.get("since", "0"))
            timeout = int(request.query.get("timeout", "0")) / 1000
        except ValueError:
            return _error(400, "M_INVALID_PARAM", "bad since or timeout")
        if len(self.room_events) <= since and timeout > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._new_event.wait(), min(timeout, 30.0))
        user = self._user(request)
        rooms: dict[str, Any] = {}
        for event in self.room_events[since:]:
            room = rooms.setdefault(
                event["room_id"],
                {"timeline": {"events": [], "limited": False, "prev_batch": str(since)}},
            )
            seen = _seen_by(event, user)
            room["timeline"]["events"].append({k: v for k, v in seen.items() if k != "room_id"})
        return web.json_response(
            {"next_batch": str(len(self.room_events)), "rooms": {"join": rooms}}
        )

    async def _send_now(self, request: web.Request, state_key: str | None) -> web.Response:
        user = self._user(request)
        if user is None:
            return _error(401, "M_MISSING_TOKEN", "Missing access token")
        content = await request.json()
        sticky = self._sticky_duration(request, state_key)
        if isinstance(sticky, web.Response):
            return sticky
        event_id = self._emit(
            user,
            request.match_info["room"],
            request.match_info["type"],
            state_key,
            content,
            sticky_duration_ms=sticky,
        )
        return web.json_response({"event_id": event_id})

    def _emit(
        self,
        sender: str,
        room_id: str,
        event_type: str,
        state_key: str | None,
        content: dict[str, Any],
        delay_id: str | None = None,
        sticky_duration_ms: int | None = None,
    ) -> str:
        event_id = "$" + secrets.token_urlsafe(12)
        event: dict[str, Any] = {
            "event_id": event_id,
            "room_id": room_id,
            "sender": sender,
            "type": event_type,
            "content": content,
            "origin_server_ts": wall_ms(),
        }
        if state_key is not None:
            event["state_key"] = state_key
        if sticky_duration_ms is not None:
            # Counted from this event's origin_server_ts: stickiness begins when it fires.
            event[_STICKY_FIELD] = {"duration_ms": sticky_duration_ms}
        if delay_id is not None:
            # Stable and unstable names; _seen_by shows them to the sender only.
            event["unsigned"] = {
                name: delay_id
                for name, served in ((_DELAY_ID_UNSTABLE, self.unstable), ("delay_id", self.stable))
                if served
            }
        self.room_events.append(event)
        self._new_event.set()
        self._new_event = asyncio.Event()
        if state_key is not None:
            self._state[(room_id, event_type, state_key)] = event
            if self.state_overwrite_rule:
                for other in list(self._delayed.values()):
                    if (
                        other.outcome is None
                        and other.owner != sender
                        and (other.room_id, other.type, other.state_key)
                        == (room_id, event_type, state_key)
                    ):
                        self._finalise(other, "cancel")
        return event_id

    async def _schedule(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if user is None:
            return _error(401, "M_MISSING_TOKEN", "Missing access token")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "M_NOT_JSON", "Content not JSON.")
        checked = _scheduling_body(body)
        if isinstance(checked, web.Response):
            return checked
        delay, content, state_key = checked
        if self.max_delay_ms is not None and delay > self.max_delay_ms:
            return self._too_large(request)
        sticky = self._sticky_duration(request, state_key)
        if isinstance(sticky, web.Response):
            return sticky
        txn_key = (user, request.match_info["txn"])
        if txn_key in self._txns:
            return web.json_response({"delay_id": self._txns[txn_key]})
        mine = [d for d in self._delayed.values() if d.owner == user and d.outcome is None]
        if self.max_scheduled is not None and len(mine) >= self.max_scheduled:
            next_due = min(d.running_since + d.delay for d in mine)
            wait_s = max(1, math.ceil((next_due - wall_ms()) / 1000))
            # MSC: Retry-After is the time until the user's next event is due, in seconds.
            return _error(
                429,
                "M_LIMIT_EXCEEDED",
                "The maximum number of delayed events has been reached.",
                headers={"Retry-After": str(wait_s)},
            )
        delayed = _Delayed(
            delay_id="fake_" + secrets.token_urlsafe(18),
            owner=user,
            room_id=request.match_info["room"],
            type=request.match_info["type"],
            state_key=state_key,
            content=content,
            delay=delay,
            running_since=wall_ms(),
            sticky_duration_ms=sticky,
        )
        self._delayed[delayed.delay_id] = delayed
        self._txns[txn_key] = delayed.delay_id
        self._arm(delayed)
        return web.json_response({"delay_id": delayed.delay_id})

    def _sticky_duration(
        self, request: web.Request, state_key: str | None
    ) -> int | web.Response | None:
        raw = request.query.get(_STICKY_PARAM)
        if not self.sticky or raw is None or state_key is not None:
            return None
        if not (raw.isascii() and raw.isdigit()):
            return _error(400, "M_INVALID_PARAM", f"{_STICKY_PARAM} must be a positive integer")
        # As Synapse 1.163: 0 is taken, and the event carries what was asked even above the
        # hour (the server counts at most an hour of it).
        return int(raw)

    def _too_large(self, request: web.Request) -> web.Response:
        """The merged MSC names the error and its field by prefix; the draft had one name."""
        message = "The requested delay exceeds the allowed maximum."
        if self.revision == "merged" and request.path.startswith(UNSTABLE):
            return web.json_response(
                {
                    "errcode": "ORG.MATRIX.MSC4140_MAX_DELAY_EXCEEDED",
                    "error": message,
                    "org.matrix.msc4140.max_delay": self.max_delay_ms,
                },
                status=400,
            )
        return _error(400, "M_MAX_DELAY_EXCEEDED", message, max_delay=self.max_delay_ms)

    def _arm(self, delayed: _Delayed) -> None:
        if delayed.timer is not None:
            delayed.timer.cancel()
        delay = delayed.delay / 1000

        def fire() -> None:
            self._finalise(delayed, "send")

        if self.clock is not None:
            delayed.timer = self.clock.call_later(delay, fire)
        else:
            delayed.timer = asyncio.get_running_loop().call_later(delay, fire)

    def _finalise(self, delayed: _Delayed, outcome: str) -> None:
        if delayed.timer is not None:
            delayed.timer.cancel()
            delayed.timer = None
        delayed.outcome = outcome
        delayed.finalised_ts = wall_ms()
        if outcome == "send":
            delayed.event_id = self._emit(
                delayed.owner,
                delayed.room_id,
                delayed.type,
                delayed.state_key,
                delayed.content,
                delayed.delay_id,
                delayed.sticky_duration_ms,
            )

    def _rate_limited(self) -> web.Response | None:
        """A token bucket: ``per_second`` tokens a second, at most ``burst`` saved up."""
        if self.management_rate is None:
            return None
        per_second, burst = self.management_rate
        now = self._now()
        tokens, at = self._bucket or (float(burst), now)
        tokens = min(float(burst), tokens + (now - at) * per_second)
        if tokens < 1:
            self._bucket = (tokens, now)
            wait_ms = math.ceil((1 - tokens) / per_second * 1000)
            return _error(429, "M_LIMIT_EXCEEDED", "Too Many Requests", retry_after_ms=wait_ms)
        self._bucket = (tokens - 1, now)
        return None

    async def _update(self, request: web.Request) -> web.Response:
        if self.revision == "merged" and self._user(request) is None:
            return _error(401, "M_MISSING_TOKEN", "Missing access token")
        limited = self._rate_limited()
        if limited is not None:
            return limited
        action = request.match_info["action"]
        if action not in ("restart", "cancel", "send"):
            return _error(404, "M_UNRECOGNIZED", "Unrecognized request")
        delayed = self._delayed.get(request.match_info["id"])
        if delayed is None:
            return _error(404, "M_NOT_FOUND", "Delayed event not found")
        if delayed.outcome is not None:
            # Repeating the outcome succeeds, so that clients can retry safely.
            if (action, delayed.outcome) in (("send", "send"), ("cancel", "cancel")):
                return web.json_response({})
            return _error(409, "M_UNKNOWN", f"The delayed event was already {delayed.outcome}")
        if action == "restart":
            delayed.running_since = wall_ms()
            self._arm(delayed)
        else:
            self._finalise(delayed, action)
        return web.json_response({})

    async def _lookup(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if user is None:
            return _error(401, "M_MISSING_TOKEN", "Missing access token")
        delayed = self._delayed.get(request.match_info["id"])
        if delayed is None or delayed.owner != user:
            return _error(404, "M_NOT_FOUND", "Delayed event not found")
        return web.json_response(delayed.as_json(self.revision))

    async def _list(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if user is None:
            return _error(401, "M_MISSING_TOKEN", "Missing access token")
        status = request.query.get("status")
        if status not in (None, "scheduled", "finalised"):
            return _error(400, "M_INVALID_PARAM", "status must be scheduled or finalised")
        try:
            start = int(request.query.get("from", "0"))
        except ValueError:
            return _error(400, "M_INVALID_PARAM", "bad from token")
        mine = sorted(
            (
                d
                for d in self._delayed.values()
                if d.owner == user
                and (status is None or (d.outcome is None) == (status == "scheduled"))
            ),
            key=lambda d: d.running_since + d.delay,
        )
        return _page(mine, start, self.revision)

    async def _list_msc4486(self, request: web.Request) -> web.Response:
        """MSC4486: filtered by status, room, type and send time, ordered by send time (when
        each was to be sent, not when it was finalised)."""
        user = self._user(request)
        if user is None:
            return _error(401, "M_MISSING_TOKEN", "Missing access token")
        query = request.query
        status, direction = query.get("status"), query.get("dir", "f")
        if status not in (None, *_MSC4486_STATUSES) or direction not in ("f", "b"):
            return _error(400, "M_INVALID_PARAM", "bad status or dir")
        try:
            start = int(query.get("from", "0"))
            from_ts = int(query.get("from_ts", "0"))
            to_ts = int(query["to_ts"]) if "to_ts" in query else None
        except ValueError:
            return _error(400, "M_INVALID_PARAM", "bad from, from_ts or to_ts")
        mine = sorted(
            (
                d
                for d in self._delayed.values()
                if d.owner == user
                and status in (None, d.status)
                and query.get("room_id") in (None, d.room_id)
                and query.get("type") in (None, d.type)
                and from_ts <= d.due_ts
                and (to_ts is None or d.due_ts <= to_ts)  # "no later than": both ends inclusive
            ),
            key=lambda d: d.due_ts,
            reverse=direction == "b",
        )
        return _page(mine, start, "merged")


def _page(events: list[_Delayed], start: int, revision: Revision) -> web.Response:
    page = events[start : start + _PAGE_SIZE]
    answer: dict[str, Any] = {"delayed_events": [d.as_json(revision) for d in page]}
    if start + _PAGE_SIZE < len(events):
        answer["next_batch"] = str(start + _PAGE_SIZE)
    return web.json_response(answer)


_DELAY_ID_UNSTABLE = "org.matrix.msc4140.delay_id"
_STICKY_FLAG = "org.matrix.msc4354"
_STICKY_PARAM = "org.matrix.msc4354.sticky_duration_ms"
_STICKY_FIELD = "msc4354_sticky"


def _seen_by(event: dict[str, Any], user: str | None) -> dict[str, Any]:
    """The event as ``user`` is given it: a fired delayed event's delay id is its sender's."""
    if "unsigned" not in event or event["sender"] == user:
        return event
    unsigned = {
        k: v for k, v in event["unsigned"].items() if k not in (_DELAY_ID_UNSTABLE, "delay_id")
    }
    seen = {k: v for k, v in event.items() if k != "unsigned"}
    return {**seen, "unsigned": unsigned} if unsigned else seen
