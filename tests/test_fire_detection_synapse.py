"""Knowing a switch fired, on real Synapse. 1.163.2 marks the sender's own copy of a fired
delayed event with ``unsigned["org.matrix.msc4140.delay_id"]``, so with the bot's sync running
the manager reports the fire for certain (``FIRED_CONFIRMED``), even when every restart was
answered 200. 1.142.1 has no mark: the fallback is the guess at the deadline (``PROBABLY_FIRED``)
and the 404 of the next restart (``LOST``); an answer of 200 that lies goes unnoticed there.

The bot's restarts are held back in its own transport (a failure without an answer, or a 200
that never reaches the server): Synapse itself is not touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from nio_delayed import (
    DelayedAsyncClient,
    DelayedEventSentError,
    DelayedEventSentResponse,
    ErrorKind,
    KeepAliveManager,
    RoomSendDelayedResponse,
    SwitchEvent,
    SwitchEventKind,
    SwitchState,
)
from nio_delayed._client.session import AiohttpTransport
from nio_delayed.request_builders import HttpRequest
from nio_delayed.transport import HttpAnswer

from .conftest import CURRENT_SYNAPSE, RESULTS, Room

pytestmark = pytest.mark.synapse

OFFLINE = {"msgtype": "m.notice", "body": "bot offline"}
DELAY_S = 2.0


class RestartGate:
    """The bot's transport, with its restarts held back while ``mode`` says so: ``"blocked"``
    fails them without an answer, ``"lying"`` answers 200 without sending them."""

    def __init__(self, client: DelayedAsyncClient) -> None:
        self._inner = AiohttpTransport(client)
        self.mode: str | None = None
        self.held = 0

    async def send(self, request: HttpRequest, timeout: float) -> HttpAnswer:
        body = request.body or {}
        restart = request.path.endswith("/restart") or body.get("action") == "restart"
        if restart and self.mode is not None:
            self.held += 1
            if self.mode == "blocked":
                raise TimeoutError("restart held back by the test")
            return HttpAnswer(200, b"{}")
        return await self._inner.send(request, timeout)

    async def close(self) -> None:
        await self._inner.close()


@contextlib.asynccontextmanager
async def syncing(client: DelayedAsyncClient) -> AsyncIterator[None]:
    task = asyncio.create_task(client.sync_forever(timeout=1000))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[float, SwitchEvent]] = []
        self._changed = asyncio.Event()

    def __call__(self, event: SwitchEvent) -> None:
        self.events.append((time.monotonic(), event))
        self._changed.set()

    def kinds(self) -> list[SwitchEventKind]:
        return [e.kind for _, e in self.events]

    async def first(self, *kinds: SwitchEventKind, timeout: float) -> tuple[float, SwitchEvent]:
        async def wait() -> tuple[float, SwitchEvent]:
            while True:
                for at, event in self.events:
                    if event.kind in kinds:
                        return at, event
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(wait(), timeout)


@pytest.mark.parametrize("mode", ["blocked", "lying"])
async def test_a_switch_whose_restarts_are_held_back_fires_and_the_sync_says_so(
    room: Room, mode: str
) -> None:
    marks = room.server.version == CURRENT_SYNAPSE  # 1.142.1 does not mark fired events
    gate = room.bot.delayed_events_transport = RestartGate(room.bot)
    recorder = Recorder()
    async with syncing(room.bot), KeepAliveManager(room.bot) as manager:
        manager.on_event(recorder)
        switch = await manager.add(
            room.room_id, "m.room.message", OFFLINE, delay=timedelta(seconds=DELAY_S)
        )
        await asyncio.sleep(0.3)
        gate.mode = mode
        assert switch.deadline_in is not None
        predicted = time.monotonic() + switch.deadline_in  # no restart is confirmed from now
        if marks:
            at, confirmed = await recorder.first(SwitchEventKind.FIRED_CONFIRMED, timeout=10)
            gate.mode = None
            await switch.wait_for(SwitchState.ARMED, timeout=10)
            assert SwitchEventKind.LOST not in recorder.kinds()
            assert switch.stats.fires_seen == 1
            RESULTS.setdefault("fire seen in the sync", {})[  # type: ignore[index]
                f"{room.server.version}, restarts {mode}"
            ] = {"after_predicted_deadline_s": round(at - predicted, 3)}
            assert at - predicted < 5.0  # the fire, then one sync round trip
            assert "arrived in the client's sync" in confirmed.message
        elif mode == "blocked":
            await recorder.first(SwitchEventKind.PROBABLY_FIRED, timeout=10)
            await asyncio.sleep(DELAY_S)
            gate.mode = None  # the next restart is answered 404: the documented fallback
            await recorder.first(SwitchEventKind.LOST, timeout=10)
            await switch.wait_for(SwitchState.ARMED, timeout=10)
            assert switch.stats.fires_seen == 0
        else:
            await asyncio.sleep(DELAY_S + 2)  # it fires; every restart "succeeds"
            gate.mode = None
            assert switch.state is SwitchState.ARMED  # nothing on 1.142.1 can tell
            assert SwitchEventKind.FIRED_CONFIRMED not in recorder.kinds()
        assert gate.held > 0
    offline = [e for e in await room.messages() if e["content"].get("body") == OFFLINE["body"]]
    # The fire, and the stop's send-now (the default exit policy) of the re-armed switch.
    assert len(offline) == (1 if mode == "lying" and not marks else 2)


async def test_a_reminder_is_awaited_until_the_sync_shows_it_sent(room: Room) -> None:
    async with syncing(room.bot):
        resp = await room.bot.room_send_delayed(
            room.room_id, "m.room.message", {"msgtype": "m.text", "body": "reminder"}, 1000
        )
        assert isinstance(resp, RoomSendDelayedResponse)
        due = time.monotonic() + 1.0
        sent = await room.bot.delayed_event_sent(resp.delay_id, timeout=timedelta(seconds=5))
        seen_after = time.monotonic() - due
    if room.server.version != CURRENT_SYNAPSE:
        assert isinstance(sent, DelayedEventSentError)
        assert sent.kind is ErrorKind.NOT_SEEN
        return
    assert isinstance(sent, DelayedEventSentResponse), sent
    [message] = [e for e in await room.messages() if e["content"].get("body") == "reminder"]
    assert sent.event_id == message["event_id"]
    # The watcher (another user) is not shown whose delayed event it was.
    assert "org.matrix.msc4140.delay_id" not in message.get("unsigned", {})
    RESULTS.setdefault("reminder seen in the sync", {})[room.server.version] = {  # type: ignore[index]
        "after_due_s": round(seen_after, 3)
    }
    assert seen_after < 5.0
