"""Knowing a switch fired: the sender's own copy of a fired delayed event carries its delay id in
``unsigned``, so with a sync running the manager sees its switch's event arrive and reports the
fire for certain (``FIRED_CONFIRMED``), then applies ``on_lost``; without a sync it guesses at the
deadline and learns from the next restart, as before. Restarts whose answers, or whose
arrival, are slower than the margin: only the second is a fire. And a reminder's delivery can be
awaited the same way (``delayed_event_sent``).

The first tests run on a FakeClock; those about slow answers on small real delays, since a
request held open while fake time passes cannot be modelled (the clock waits for real I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from nio.events import Event
from nio.responses import SyncResponse

from nio_delayed import (
    DeadMansSwitch,
    DelayedAsyncClient,
    DelayedEventSentError,
    DelayedEventSentResponse,
    ErrorKind,
    KeepAliveManager,
    LostPolicy,
    RateLimit,
    RoomSendDelayedResponse,
    ServerLimits,
    SwitchEvent,
    SwitchEventKind,
    SwitchState,
)
from nio_delayed._client.sent import FiredMarks
from nio_delayed.testing import FakeClock, FakeHomeserver, Fault

from .conftest import fake_client
from .test_keepalive import advancing

ROOM = "!room:fake"
OFFLINE = {"msgtype": "m.notice", "body": "bot offline"}


@dataclass
class Env:
    server: FakeHomeserver
    client: DelayedAsyncClient
    manager: KeepAliveManager
    clock: FakeClock | None = None
    events: list[SwitchEvent] = field(default_factory=list)

    def kinds(self) -> list[SwitchEventKind]:
        return [e.kind for e in self.events]

    def of(self, kind: SwitchEventKind) -> list[SwitchEvent]:
        return [e for e in self.events if e.kind is kind]

    def offline_sent(self) -> int:
        return sum(e["content"].get("body") == OFFLINE["body"] for e in self.server.room_events)

    async def add(self, delay: float = 30, **options: Any) -> DeadMansSwitch:
        return await self.manager.add(
            ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=delay), **options
        )

    @property
    def fake_clock(self) -> FakeClock:
        assert self.clock is not None, "this test runs on a FakeClock"
        return self.clock

    async def sync(self) -> None:
        await self.client.sync(timeout=0)
        if self.clock is not None:
            await self.clock.settle()


@contextlib.asynccontextmanager
async def make_env(fake_clock: bool, limits: ServerLimits | None = None) -> AsyncIterator[Env]:
    clock = FakeClock() if fake_clock else None
    async with FakeHomeserver(clock=clock) as server:
        client = await fake_client(server)
        manager = KeepAliveManager(client, clock=clock, seed=1, request_timeout=5, limits=limits)
        env = Env(server, client, manager, clock)
        manager.on_event(env.events.append)
        try:
            yield env
        finally:
            if clock is not None:
                await advancing(clock, manager.close())
            else:
                await manager.close()
            await client.close()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with make_env(fake_clock=True) as environment:
        yield environment


# 1. a fire seen in the sync ------------------------------------------------------------------


async def test_a_fire_seen_in_the_sync_is_certain_and_the_switch_rearms(env: Env) -> None:
    switch = await env.add()
    fired_id = switch.delay_id
    assert fired_id is not None
    env.server.fire(fired_id)  # sent early (a send-now by someone holding the id, say)
    await env.sync()
    [confirmed] = env.of(SwitchEventKind.FIRED_CONFIRMED)
    assert "arrived in the client's sync" in confirmed.message
    assert fired_id not in confirmed.message  # the id is shown shortened, never whole
    assert SwitchEventKind.LOST not in env.kinds()  # certain: not the ambiguous loss
    assert SwitchEventKind.PROBABLY_FIRED not in env.kinds()
    assert env.kinds()[-1] is SwitchEventKind.REARMED
    assert switch.state is SwitchState.ARMED
    assert switch.delay_id != fired_id
    assert (switch.stats.fires_seen, switch.stats.losses, switch.stats.rearms) == (1, 1, 1)
    assert env.manager.stats().fires_seen == 1
    assert [e["delay_id"] for e in env.server.scheduled()] == [switch.delay_id]


async def test_with_on_lost_stop_a_seen_fire_ends_the_switch_in_fired(env: Env) -> None:
    switch = await env.add(on_lost=LostPolicy.STOP)
    assert switch.delay_id is not None
    env.server.fire(switch.delay_id)
    await env.sync()
    assert env.kinds()[-1] is SwitchEventKind.FIRED_CONFIRMED
    assert env.of(SwitchEventKind.FIRED_CONFIRMED)[0].state is SwitchState.FIRED
    assert switch.state is SwitchState.FIRED
    assert env.manager.switches == []
    assert env.server.scheduled() == []


async def test_a_server_that_answers_200_to_restarts_after_firing_is_caught_by_the_sync(
    env: Env,
) -> None:
    switch = await env.add(delay=30)
    # The server answers every restart with 200 and restarts nothing: the event fires at 30 s.
    lying = env.server.inject(Fault(path_contains="/restart", status=200, body={}, times=None))
    await env.fake_clock.advance(45)
    assert env.offline_sent() == 1
    # Without a sync nothing can tell: each restart was "confirmed".
    assert switch.state is SwitchState.ARMED
    assert SwitchEventKind.FIRED_CONFIRMED not in env.kinds()
    lying.times = 0
    await env.sync()
    assert SwitchEventKind.FIRED_CONFIRMED in env.kinds()
    assert switch.state is SwitchState.ARMED
    assert switch.stats.fires_seen == 1
    assert len(env.server.scheduled()) == 1  # a new event guards the switch again


async def test_the_same_fire_seen_again_in_a_later_sync_is_handled_once(env: Env) -> None:
    switch = await env.add()
    assert switch.delay_id is not None
    env.server.fire(switch.delay_id)
    await env.sync()
    await env.client.sync(timeout=0, since="0")  # a sync that repeats the whole history
    await env.fake_clock.settle()
    assert len(env.of(SwitchEventKind.FIRED_CONFIRMED)) == 1
    assert switch.stats.rearms == 1
    assert len(env.server.scheduled()) == 1


async def test_another_users_view_of_the_fire_does_not_name_the_switch(env: Env) -> None:
    """Only the sender is shown the delay id: a second account's sync (even one that the
    manager were watching) has nothing to match."""
    switch = await env.add()
    assert switch.delay_id is not None
    other = await fake_client(env.server, "@watcher:fake")
    try:
        env.server.fire(switch.delay_id)
        answer = await other.sync(timeout=0)
        [event] = answer.rooms.join[ROOM].timeline.events[-1:]
        assert "unsigned" not in event.source or not event.source["unsigned"]
    finally:
        await other.close()


async def test_a_fire_noted_while_a_restart_is_under_way_is_applied_when_it_ends(
    env: Env,
) -> None:
    """The sync shows the fire while the switch's restart is on the wire: the restart's 409
    then confirms what the sync said, reported once as a certain fire."""
    switch = await env.add(delay=30)
    assert switch.delay_id is not None
    env.server.fire(switch.delay_id)
    env.server.inject(Fault(path_contains="/restart", latency=0.5))  # real time: the wire
    advancing_task = asyncio.ensure_future(env.fake_clock.advance(11))  # restart at 9-10 s
    for _ in range(100):
        if switch.busy:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the restart never left")
    await env.client.sync(timeout=0)  # while the restart waits for its answer
    await advancing_task
    [confirmed] = env.of(SwitchEventKind.FIRED_CONFIRMED)
    assert confirmed.error is not None
    assert confirmed.error.http_status == 409
    assert SwitchEventKind.LOST not in env.kinds()
    assert switch.state is SwitchState.ARMED
    assert switch.stats.fires_seen == 1


async def test_without_a_sync_a_fire_is_still_a_loss_as_before(env: Env) -> None:
    switch = await env.add(delay=30)
    assert switch.delay_id is not None
    env.server.fire(switch.delay_id)
    await env.fake_clock.advance(11)
    assert SwitchEventKind.LOST in env.kinds()
    assert SwitchEventKind.FIRED_CONFIRMED not in env.kinds()
    assert switch.stats.fires_seen == 0


# 2. answers and arrivals slower than the margin (real time, delay 4 s) ------------------------


async def run_with_sync(env: Env, seconds: float) -> None:
    """Let ``seconds`` pass with the bot's sync loop running."""

    async def sync_loop() -> None:
        while True:
            await env.client.sync(timeout=200)

    task = asyncio.ensure_future(sync_loop())
    try:
        await asyncio.sleep(seconds)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_restart_acted_on_in_time_but_answered_after_the_deadline_is_no_fire() -> None:
    async with make_env(fake_clock=False) as env:
        switch = await env.add(delay=4)
        # The first restart (at ~1.3 s) is applied at once and answered 3.2 s later: after the
        # deadline the client predicted (4 s), well before the event's new one (~5.3 s).
        late = env.server.inject(Fault(path_contains="/restart", answer_latency=3.2))
        await run_with_sync(env, 6.5)
        assert late.times == 0  # the fault did meet the restart
        assert env.offline_sent() == 0
        assert SwitchEventKind.FIRED_CONFIRMED not in env.kinds()
        assert SwitchEventKind.LOST not in env.kinds()
        assert SwitchEventKind.REARMED not in env.kinds()
        # It was unsure at the deadline, said so as a guess, and the next answer settled it.
        assert SwitchEventKind.RECOVERED in env.kinds()
        assert switch.state is SwitchState.ARMED
        assert len(env.server.scheduled()) == 1


@pytest.mark.parametrize("syncing", [True, False], ids=["sync", "no-sync"])
async def test_a_restart_that_reaches_the_server_after_the_deadline_is_a_fire(
    syncing: bool,
) -> None:
    async with make_env(fake_clock=False) as env:
        switch = await env.add(delay=4)
        # The first restart (at ~1.3 s) takes 3.2 s to reach the server: the event fires at 4 s.
        env.server.inject(Fault(path_contains="/restart", latency=3.2))
        if syncing:
            await run_with_sync(env, 6.5)
        else:
            await asyncio.sleep(6.5)
        assert env.offline_sent() == 1
        kinds = env.kinds()
        if syncing:
            assert kinds.count(SwitchEventKind.FIRED_CONFIRMED) == 1
            assert SwitchEventKind.LOST not in kinds
            assert switch.stats.fires_seen == 1
        else:
            assert kinds.count(SwitchEventKind.LOST) == 1
            assert switch.stats.fires_seen == 0
        assert kinds.count(SwitchEventKind.REARMED) == 1
        assert switch.state is SwitchState.ARMED
        assert len(env.server.scheduled()) == 1


# 3. reminders: awaiting a delayed event's delivery ------------------------------------------


async def test_a_reminder_can_be_awaited_until_the_sync_shows_it_sent(env: Env) -> None:
    resp = await env.client.room_send_delayed(ROOM, "m.room.message", OFFLINE, 60_000)
    assert isinstance(resp, RoomSendDelayedResponse)
    waiting = asyncio.ensure_future(
        env.client.delayed_event_sent(resp.delay_id, timeout=timedelta(seconds=30))
    )
    await env.fake_clock.advance(60)  # the server sends it...
    assert not waiting.done()
    await env.sync()  # ...and the client's sync shows it
    sent = await waiting
    assert isinstance(sent, DelayedEventSentResponse)
    [event] = [e for e in env.server.room_events if e["type"] == "m.room.message"]
    assert (sent.event_id, sent.room_id, sent.event_type) == (
        event["event_id"],
        ROOM,
        "m.room.message",
    )
    assert sent.event["content"]["body"] == OFFLINE["body"]
    assert resp.delay_id not in repr(sent)  # the event holds the whole id: kept out of the repr
    # Asked again after the sync showed it, the answer is at once.
    again = await env.client.delayed_event_sent(resp.delay_id, timeout=timedelta(0))
    assert isinstance(again, DelayedEventSentResponse)
    assert again.event_id == sent.event_id


async def test_a_reminder_not_seen_in_time_is_a_typed_not_seen_error(env: Env) -> None:
    resp = await env.client.room_send_delayed(ROOM, "m.room.message", OFFLINE, 60_000)
    assert isinstance(resp, RoomSendDelayedResponse)
    error = await env.client.delayed_event_sent(resp.delay_id, timeout=timedelta(seconds=0.05))
    assert isinstance(error, DelayedEventSentError)
    assert error.kind is ErrorKind.NOT_SEEN
    assert resp.delay_id not in str(error)
    assert "30 s late" in error.message


@pytest.mark.parametrize(
    ("delay_id", "timeout"),
    [("ok_id", 5), ("ok_id", timedelta(seconds=-1)), ("", timedelta(seconds=1)), ("..", None)],
)
async def test_awaiting_a_reminder_with_bad_arguments_is_invalid(
    env: Env, delay_id: str, timeout: Any
) -> None:
    error = await env.client.delayed_event_sent(delay_id, timeout=timeout)
    assert isinstance(error, DelayedEventSentError)
    assert error.kind is ErrorKind.INVALID


def test_a_decrypted_event_keeps_the_delay_id_its_ciphertext_carried() -> None:
    """nio replaces an encrypted timeline event by its decrypted form, built from the ciphertext
    alone; the sent mark is carried over so that the sync observers still see it."""
    encrypted = {
        "type": "m.room.encrypted",
        "event_id": "$e",
        "sender": "@bot:fake",
        "origin_server_ts": 1,
        "content": {
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "x",
            "sender_key": "k",
            "session_id": "s",
            "device_id": "D",
        },
        "unsigned": {"org.matrix.msc4140.delay_id": "syd_abc", "age": 5},
    }
    response = SyncResponse.from_dict(
        {"next_batch": "1", "rooms": {"join": {ROOM: {"timeline": {"events": [encrypted]}}}}}
    )
    assert isinstance(response, SyncResponse)
    marks = FiredMarks(response)
    decrypted = Event.parse_decrypted_event(
        {
            "type": "m.room.message",
            "event_id": "$e",
            "sender": "@bot:fake",
            "origin_server_ts": 1,
            "content": {"msgtype": "m.text", "body": "hi"},
        }
    )
    response.rooms.join[ROOM].timeline.events[0] = decrypted  # what nio's sync handling does
    marks.restore()
    assert decrypted.source["unsigned"] == {"org.matrix.msc4140.delay_id": "syd_abc"}


async def test_a_fire_seen_while_the_restart_waits_for_the_budget_is_applied_at_once() -> None:
    """Under a tight rate limit one switch's restart waits its turn; the sync shows its event
    sent meanwhile: the fire is reported then, not when the restart's turn comes."""
    tight = ServerLimits(management=RateLimit(per_second=0.05, burst=1), scheduling=None)
    async with make_env(fake_clock=True, limits=tight) as env:
        first, second = [await env.add(key=key) for key in ("a", "b")]
        await env.fake_clock.advance(10.5)  # both due at 9-10 s: one token, one waits
        waiting = next(s for s in (first, second) if s.busy)
        assert waiting.delay_id is not None
        env.server.fire(waiting.delay_id)
        await env.sync()
        assert env.kinds().count(SwitchEventKind.FIRED_CONFIRMED) == 1
        assert env.of(SwitchEventKind.FIRED_CONFIRMED)[0].switch is waiting
        assert SwitchEventKind.LOST not in env.kinds()
