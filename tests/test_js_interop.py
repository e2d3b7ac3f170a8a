"""matrix-js-sdk as a peer on the same account, against real Synapse: what either client
schedules, the other lists with the same fields, restarts, cancels and sends; a js-sdk client's
delayed state event is left alone by a switch started and stopped beside it; a sticky delayed
message scheduled by either stays sticky through the other's hands.

The js-sdk side is tests/js/peer.mjs: one js-sdk call per node process, its answer as JSON.
`make test` installs the matrix-js-sdk pinned by tests/js/package-lock.json (`npm ci`); without
node, or without npm to install it, these tests skip and say so."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import pytest
from nio import MessageDirection, RoomCreateResponse, RoomMessagesResponse

from nio_delayed import (
    DelayedAsyncClient,
    DelayedEventsListResponse,
    ErrorKind,
    KeepAliveManager,
    LeftoverPolicy,
    RoomPutStateDelayedResponse,
    RoomSendDelayedResponse,
    UpdateDelayedEventResponse,
)
from nio_delayed.devserver import DevServer

from .conftest import login, unique
from .js_sdk import JS, cannot_run, require_installed

PEER = JS / "peer.mjs"
#: One js-sdk call (a node start, js-sdk's /versions check, the call) takes about 0.5 s.
CALL_TIMEOUT = 20.0
DELAY_MS = 60_000  # longer than any test: nothing fires unless a client sends it
STICKY_MS = 300_000
STATUS = "org.example.status"
TEXT = {"msgtype": "m.text", "body": "left the call"}
OFFLINE = {"online": False}


CANNOT_RUN = cannot_run()
# A skip mark, not a fixture: without node, no Synapse is started for these tests.
pytestmark = [
    pytest.mark.synapse,
    pytest.mark.skipif(CANNOT_RUN is not None, reason=str(CANNOT_RUN)),
]


@pytest.fixture(autouse=True)
def _js_sdk_installed() -> None:
    require_installed()


# -- the two clients ------------------------------------------------------------------------


class JsError(Exception):
    """js-sdk threw a MatrixError: the server refused the call."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('status')} {error.get('errcode')}")
        self.errcode: str | None = error.get("errcode")


async def node(command: str, **args: Any) -> Any:
    """Run one peer.mjs command: what js-sdk returned, or JsError. The arguments (the access
    token among them) go on stdin, out of the process list. A hung node is killed by its PID."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(PEER),
        command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            process.communicate(json.dumps(args).encode()), CALL_TIMEOUT
        )
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    assert process.returncode == 0, f"peer.mjs {command} failed: {err.decode()[-2000:]}"
    answer = json.loads(out)
    if "error" in answer:
        raise JsError(answer["error"])
    return answer["ok"]


def fields(event: dict[str, Any]) -> dict[str, Any]:
    """A delayed event as js-sdk hands it over (the server's JSON, unparsed), in the names of
    the merged MSC. Synapse 1.163.2 gives the older names too, with the same values; 1.142.1
    gives only the older ones (``delay``, ``running_since``)."""
    for new, old in (("delay_ms", "delay"), ("delayed_since_ts", "running_since")):
        if new in event and old in event:
            assert event[new] == event[old], event
    return {
        "room_id": event["room_id"],
        "type": event["type"],
        "state_key": event.get("state_key"),
        "content": event["content"],
        "delay_ms": event.get("delay_ms", event.get("delay")),
        "since_ts": event.get("delayed_since_ts", event.get("running_since")),
    }


class Peer(Protocol):
    """One client of the account, as the tests drive it."""

    name: str

    async def schedule(
        self, room_id: str, event_type: str, content: dict[str, Any], **kind: Any
    ) -> str:
        """Schedule with ``DELAY_MS``: ``state_key=`` for a state event, ``sticky_ms=`` for a
        sticky message. Returns the delay_id."""

    async def listing(self) -> dict[str, dict[str, Any]]:
        """The account's scheduled delayed events, by delay_id, as ``fields()`` has them."""

    async def act(self, action: str, delay_id: str) -> bool:
        """Restart, cancel or send it; False if the server has no such event."""

    async def messages(self, room_id: str) -> list[dict[str, Any]]:
        """The room's latest events as this client reads them, newest first."""


@dataclass
class NioPeer:
    client: DelayedAsyncClient
    name: str = "nio-delayed"

    async def schedule(
        self, room_id: str, event_type: str, content: dict[str, Any], **kind: Any
    ) -> str:
        if "state_key" in kind:
            state = await self.client.room_put_state_delayed(
                room_id, event_type, content, timedelta(milliseconds=DELAY_MS), kind["state_key"]
            )
            assert isinstance(state, RoomPutStateDelayedResponse), state
            return state.delay_id
        sticky = kind.get("sticky_ms")
        message = await self.client.room_send_delayed(
            room_id,
            event_type,
            content,
            timedelta(milliseconds=DELAY_MS),
            sticky_duration=None if sticky is None else timedelta(milliseconds=sticky),
        )
        assert isinstance(message, RoomSendDelayedResponse), message
        return message.delay_id

    async def listing(self) -> dict[str, dict[str, Any]]:
        listed = await self.client.delayed_events()
        assert isinstance(listed, DelayedEventsListResponse), listed
        return {
            e.delay_id: {
                "room_id": e.room_id,
                "type": e.type,
                "state_key": e.state_key,
                "content": e.content,
                "delay_ms": e.delay_ms,
                "since_ts": e.since_ts,
            }
            for e in listed.scheduled
        }

    async def act(self, action: str, delay_id: str) -> bool:
        call = {
            "restart": self.client.restart_delayed_event,
            "cancel": self.client.cancel_delayed_event,
            "send": self.client.send_delayed_event_now,
        }[action]
        resp = await call(delay_id)
        if isinstance(resp, UpdateDelayedEventResponse):
            return True
        assert resp.kind is ErrorKind.NOT_FOUND, resp
        return False

    async def messages(self, room_id: str) -> list[dict[str, Any]]:
        resp = await self.client.room_messages(room_id, direction=MessageDirection.back, limit=50)
        assert isinstance(resp, RoomMessagesResponse), resp
        return [e.source for e in resp.chunk]


@dataclass
class JsPeer:
    base_url: str
    user_id: str
    access_token: str
    name: str = "matrix-js-sdk"

    async def call(self, command: str, **args: Any) -> Any:
        me = {"baseUrl": self.base_url, "userId": self.user_id, "accessToken": self.access_token}
        return await node(command, **me, **args)

    async def schedule(
        self, room_id: str, event_type: str, content: dict[str, Any], **kind: Any
    ) -> str:
        args: dict[str, Any] = {"roomId": room_id, "type": event_type, "content": content}
        if "state_key" in kind:
            args["stateKey"] = kind["state_key"]
        if "sticky_ms" in kind:
            args["stickyDurationMs"] = kind["sticky_ms"]
        scheduled = await self.call("schedule", delay=DELAY_MS, **args)
        delay_id: str = scheduled["delay_id"]
        return delay_id

    async def listing(self) -> dict[str, dict[str, Any]]:
        # Synapse answers {"delayed_events": [...]}; js-sdk passes it on as it came.
        listed = await self.call("list")
        return {e["delay_id"]: fields(e) for e in listed["delayed_events"]}

    async def act(self, action: str, delay_id: str) -> bool:
        try:
            await self.call(action, delayId=delay_id)
        except JsError as exc:
            if exc.errcode != "M_NOT_FOUND":
                raise
            return False
        return True

    async def messages(self, room_id: str) -> list[dict[str, Any]]:
        chunk: list[dict[str, Any]] = (await self.call("messages", roomId=room_id))["chunk"]
        return chunk


@dataclass
class Account:
    """One account with a device for each client, in a room of its own."""

    room_id: str
    nio: NioPeer
    js: JsPeer


async def open_account(server: DevServer) -> AsyncIterator[Account]:
    localpart = unique("peer")
    user = server.register_user(localpart)
    client = await login(server, user)
    try:
        created = await client.room_create()
        assert isinstance(created, RoomCreateResponse), created
        device = await node("login", baseUrl=server.url, user=localpart, password=user.password)
        assert device["device_id"] != user.device_id
        js = JsPeer(server.url, user.user_id, device["access_token"])
        yield Account(created.room_id, NioPeer(client), js)
    finally:
        await client.close()


@pytest.fixture
async def account(synapse: DevServer) -> AsyncIterator[Account]:
    async for value in open_account(synapse):
        yield value


def roles(account: Account, nio_schedules: bool) -> tuple[Peer, Peer]:
    """(the client that schedules, the other one)."""
    return (account.nio, account.js) if nio_schedules else (account.js, account.nio)


#: Each test runs twice: once with each client scheduling.
EITHER = pytest.mark.parametrize(
    "nio_schedules", [True, False], ids=["nio-delayed schedules", "js-sdk schedules"]
)


async def seen(
    peer: Peer, room_id: str, wanted: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> dict[str, Any]:
    """The latest event of the room that is ``wanted``, once ``peer`` reads one there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for event in await peer.messages(room_id):
            if wanted(event):
                return event
        if loop.time() > deadline:
            pytest.fail(f"{peer.name} did not see the event within {timeout} s")
        await asyncio.sleep(0.2)


def unset_since(event: dict[str, Any]) -> dict[str, Any]:
    """The fields but when the timer was last started."""
    return event | {"since_ts": None}


def scheduled(
    room_id: str, event_type: str, content: dict[str, Any], state_key: str | None = None
) -> dict[str, Any]:
    """The fields of an event scheduled with ``DELAY_MS``, as ``unset_since`` leaves them."""
    return {
        "room_id": room_id,
        "type": event_type,
        "state_key": state_key,
        "content": content,
        "delay_ms": DELAY_MS,
        "since_ts": None,
    }


# -- scheduled by one, handled by the other -------------------------------------------------


@EITHER
async def test_what_one_client_schedules_the_other_lists_restarts_cancels_and_sends(
    account: Account, nio_schedules: bool
) -> None:
    scheduler, other = roles(account, nio_schedules)
    room = account.room_id
    message = await scheduler.schedule(room, "m.room.message", TEXT)
    state = await scheduler.schedule(room, STATUS, OFFLINE, state_key="bot")

    # Listed by both, with the same fields: what was scheduled, and one timer start.
    listed = await other.listing()
    assert listed == await scheduler.listing()
    assert unset_since(listed[message]) == scheduled(room, "m.room.message", TEXT)
    assert unset_since(listed[state]) == scheduled(room, STATUS, OFFLINE, "bot")

    # The other restarts the state event's timer: the scheduler sees it started later.
    assert await other.act("restart", state)
    restarted = (await scheduler.listing())[state]
    assert restarted["since_ts"] > listed[state]["since_ts"]
    assert unset_since(restarted) == unset_since(listed[state])

    # The other cancels the message: it is gone for the scheduler too.
    assert await other.act("cancel", message)
    assert message not in await scheduler.listing()
    assert not await scheduler.act("restart", message)

    # The other sends the state event now: the scheduler reads it in the room.
    assert await other.act("send", state)
    event = await seen(scheduler, room, lambda e: e["type"] == STATUS)
    assert (event["state_key"], event["content"]) == ("bot", OFFLINE)
    assert await scheduler.listing() == {}


# -- a switch beside another client's delayed state event -----------------------------------


@pytest.mark.parametrize(
    ("on_leftover", "theirs_content"),
    [
        (LeftoverPolicy.ADOPT, OFFLINE | {"device": "js-sdk"}),
        (LeftoverPolicy.ADOPT, OFFLINE),
        (LeftoverPolicy.CANCEL, OFFLINE),
    ],
    ids=["adopt, other content", "adopt, same content", "cancel"],
)
async def test_a_js_sdk_delayed_state_event_survives_a_switch_started_and_stopped_beside_it(
    account: Account, on_leftover: LeftoverPolicy, theirs_content: dict[str, Any]
) -> None:
    """The same account, room, type and state key, even the same content and delay: a js-sdk
    client's delayed state event (a call membership, say) is no leftover of the switch, which
    neither adopts, restarts, cancels nor sends it."""
    room, js = account.room_id, account.js
    theirs = await js.schedule(room, STATUS, theirs_content, state_key="bot")
    before = (await js.listing())[theirs]

    async with KeepAliveManager(account.nio.client) as manager:
        switch = await manager.add(
            room,
            STATUS,
            OFFLINE,
            state_key="bot",
            delay=timedelta(milliseconds=DELAY_MS),
            on_leftover=on_leftover,
        )
        assert switch.delay_id != theirs, "the switch took the js-sdk client's event as its own"
        during = await js.listing()
        assert during.get(theirs) == before, "the switch ended or restarted it"
    # Stopped by its exit policy (SEND), the switch sent its own event, as the bot's device.
    event = await seen(account.nio, room, lambda e: e["type"] == STATUS)
    assert OFFLINE.items() <= event["content"].items()  # (a switch may mark what is its own)
    # (Synapse 1.163.2 names the delayed event it came from, to its sender; 1.142.1 does not.)
    assert event["unsigned"].get("org.matrix.msc4140.delay_id") in (switch.delay_id, None)

    # The js-sdk client's event is still scheduled, untouched, and still its own to end.
    assert await js.listing() == {theirs: before}
    assert await js.act("cancel", theirs)


# -- sticky delayed messages (MSC4354) ------------------------------------------------------


@pytest.fixture
async def sticky_account(sticky_synapse: DevServer) -> AsyncIterator[Account]:
    async for value in open_account(sticky_synapse):
        yield value


@EITHER
async def test_a_sticky_delayed_message_is_listed_by_the_other_client_and_stays_sticky(
    sticky_account: Account, nio_schedules: bool
) -> None:
    scheduler, other = roles(sticky_account, nio_schedules)
    room = sticky_account.room_id
    sticky = await scheduler.schedule(room, "m.room.message", TEXT, sticky_ms=STICKY_MS)

    listed = await other.listing()
    assert listed == await scheduler.listing()
    assert unset_since(listed[sticky]) == scheduled(room, "m.room.message", TEXT)

    # Restarted and sent by the other client, it is sent sticky, as both clients read it.
    assert await other.act("restart", sticky)
    assert await other.act("send", sticky)
    for peer in (scheduler, other):
        event = await seen(peer, room, lambda e: e["content"] == TEXT)
        assert event["msc4354_sticky"] == {"duration_ms": STICKY_MS}, peer.name
