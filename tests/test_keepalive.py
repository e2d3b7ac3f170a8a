"""Every branch of the keep-alive manager, on a controllable clock, against the fake homeserver.

The fake homeserver fires delayed events on the same FakeClock, so "the deadline passes" means
the same thing to the client and to the server.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from nio_delayed import (
    AliveEvent,
    DeadMansSwitch,
    DelayedAsyncClient,
    ExitPolicy,
    InvalidInput,
    KeepAliveError,
    KeepAliveManager,
    LeftoverPolicy,
    LostPolicy,
    RateLimit,
    ServerLimits,
    SwitchArmError,
    SwitchEvent,
    SwitchEventKind,
    SwitchState,
    UnsupportedServerError,
)
from nio_delayed.testing import FakeClock, FakeHomeserver, Fault

from .conftest import fake_client

T = TypeVar("T")
ROOM = "!room:fake"
OFFLINE = {"msgtype": "m.notice", "body": "bot offline"}
RATE_LIMITED = {"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 2000}


@dataclass
class Env:
    clock: FakeClock
    server: FakeHomeserver
    client: DelayedAsyncClient
    manager: KeepAliveManager
    events: list[SwitchEvent] = field(default_factory=list)

    def kinds(self) -> list[SwitchEventKind]:
        return [e.kind for e in self.events]

    def fired(self) -> list[dict[str, object]]:
        return [e for e in self.server.room_events if e["content"].get("body") == OFFLINE["body"]]

    async def new_manager(self, device: str = "DEVICE", **options: Any) -> KeepAliveManager:
        """A second process of the same bot (the same device unless ``device`` says otherwise):
        a new client and manager, same account."""
        client = DelayedAsyncClient(self.server.url, self.client.user_id)
        client.restore_login(self.client.user_id, device, self.client.access_token)
        client.delayed_events_limits = self.client.delayed_events_limits
        manager = KeepAliveManager(client, clock=self.clock, seed=2, **options)
        manager.on_event(self.events.append)
        return manager


async def advancing(clock: FakeClock, awaitable: Awaitable[T], step: float = 0.5) -> T:
    """Await ``awaitable`` while time passes (it waits for the request budget or a back-off)."""
    task = asyncio.ensure_future(awaitable)
    while not task.done():
        await clock.advance(step)
    return task.result()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = FakeClock()
    async with FakeHomeserver(clock=clock, stable=True, unstable=False) as server:
        client = await fake_client(server)
        manager = KeepAliveManager(
            client, clock=clock, seed=1, request_timeout=timedelta(seconds=5)
        )
        environment = Env(clock, server, client, manager)
        manager.on_event(environment.events.append)
        yield environment
        await advancing(clock, manager.close())  # stops may wait for the budget
        await client.close()


async def add(env: Env, **options: Any) -> DeadMansSwitch:
    """A message switch of 30 s."""
    return await env.manager.add(
        ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30), **options
    )


# 1. support first -----------------------------------------------------------------------------


async def test_unsupported_server_raises_and_sends_nothing() -> None:
    async with FakeHomeserver(delayed_events=False) as server:
        client = await fake_client(server)
        manager = KeepAliveManager(client)
        with pytest.raises(UnsupportedServerError, match="nothing was sent"):
            await manager.add(ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30))
        await client.close()
    assert server.room_events == []
    assert {r.method for r in server.requests} == {"GET"}


async def test_bad_arguments_are_refused_before_anything_is_sent(env: Env) -> None:
    with pytest.raises(InvalidInput, match="delay"):
        await env.manager.add(ROOM, "m.room.message", OFFLINE, delay=timedelta(0))
    with pytest.raises(InvalidInput, match="room_id"):
        await env.manager.add("#alias:x", "m.room.message", OFFLINE, delay=timedelta(seconds=1))
    assert env.server.requests == []


async def test_one_event_is_guarded_by_one_switch(env: Env) -> None:
    await add(env)
    with pytest.raises(KeepAliveError, match="already guards"):
        await add(env)


async def test_a_switch_handle_is_read_only(env: Env) -> None:
    switch = await add(env)
    with pytest.raises(AttributeError):
        switch.state = SwitchState.STOPPED  # type: ignore[misc]
    with pytest.raises(AttributeError):
        switch.delay_id = None  # type: ignore[misc]
    switch.stats.restarts_ok = 99  # a copy: the switch's own counters stay as they are
    assert (switch.state, switch.stats.restarts_ok) == (SwitchState.ARMED, 0)
    assert not hasattr(switch, "machine")


async def test_an_event_the_server_refuses_raises_with_its_error(env: Env) -> None:
    env.server.inject(
        Fault(
            path_contains="/delayed_event/",
            status=403,
            body={"errcode": "M_FORBIDDEN", "error": "not in room"},
        )
    )
    with pytest.raises(SwitchArmError, match="not in room") as caught:
        await add(env)
    assert caught.value.error is not None
    assert caught.value.error.kind.value == "forbidden"
    assert env.manager.switches == []


# 2. delay above the server's maximum ----------------------------------------------------------


async def test_delay_above_the_maximum_is_lowered_with_a_warning(env: Env) -> None:
    env.server.max_delay_ms = 12_000
    switch = await env.manager.add(
        ROOM,
        "m.room.message",
        OFFLINE,
        delay=timedelta(minutes=5),
        restart_interval=timedelta(minutes=1),
    )
    assert switch.requested_delay == timedelta(minutes=5)
    assert switch.delay == timedelta(seconds=12)
    assert switch.restart_interval == timedelta(seconds=4)  # re-derived from the new delay
    [warning] = [e for e in env.events if e.kind is SwitchEventKind.DELAY_LOWERED]
    assert "12000 ms" in warning.message
    await env.clock.advance(60)
    assert env.fired() == []


# 3. arm first, then "alive" ---------------------------------------------------------------------


async def test_armed_before_alive_is_published(env: Env) -> None:
    alive = AliveEvent("org.example.status", {"online": True}, state_key="bot")
    switch = await add(env, alive=alive)
    writes = [r.path for r in env.server.requests if r.method == "PUT"]
    assert "/delayed_event/" in writes[0]
    assert "/state/org.example.status/bot" in writes[1]
    assert env.kinds()[:2] == [SwitchEventKind.ARMED, SwitchEventKind.ALIVE_PUBLISHED]
    assert switch.state is SwitchState.ARMED


# 4. deadlines, bounded attempts, back-off, the shared 429 gate -------------------------------


async def test_a_switch_never_fires_while_the_manager_runs(env: Env) -> None:
    switch = await add(env)
    await env.clock.advance(600)
    assert env.fired() == []
    stats = switch.stats
    assert 59 <= stats.restarts_ok <= 60  # every 10 s for 600 s: the minimum, no more
    assert stats.restarts_failed == 0
    assert stats.min_margin >= 19.9  # restarted with two thirds of the delay to spare
    assert switch.state is SwitchState.ARMED
    assert 20 <= switch.deadline_in <= 30


async def test_failing_restarts_put_it_at_risk_and_back_off_until_one_succeeds(env: Env) -> None:
    switch = await add(env)
    env.server.inject(Fault(path_contains="/restart", status=503, body="unavailable", times=4))
    await env.clock.advance(60)
    assert env.fired() == []
    kinds = env.kinds()
    assert SwitchEventKind.AT_RISK in kinds
    assert kinds.index(SwitchEventKind.RECOVERED) > kinds.index(SwitchEventKind.AT_RISK)
    stats = switch.stats
    assert (stats.restarts_failed, stats.retries) == (4, 4)
    assert switch.state is SwitchState.ARMED
    failed = [r.at for r in env.server.requests_to("/restart") if r.fault]
    gaps = [b - a for a, b in itertools.pairwise(failed)]
    assert all(gap >= 0.05 for gap in gaps)  # backed off, never hammered


async def test_dropped_connections_are_not_fatal(env: Env) -> None:
    switch = await add(env)
    env.server.inject(Fault(path_contains="/restart", drop=True, times=3))
    await env.clock.advance(60)
    assert env.fired() == []
    assert switch.state is SwitchState.ARMED
    assert switch.stats.restarts_failed == 3


async def test_a_budget_that_matches_the_server_is_never_refused() -> None:
    """100 switches against a server that allows 10 management requests a second (burst 10),
    as Synapse's rc_delayed_event_mgmt can be set, and a client told so."""
    clock = FakeClock()
    async with FakeHomeserver(clock=clock, management_rate=(10, 10)) as server:
        client = await fake_client(server)
        manager = KeepAliveManager(client, clock=clock, seed=3)
        switches = [
            await manager.add(
                ROOM, "m.room.message", OFFLINE, delay=timedelta(minutes=1), key=str(n)
            )
            for n in range(100)
        ]
        await clock.advance(300)
        states = [s.state for s in switches]
        fired = list(server.room_events)
        assert await advancing(clock, manager.close()) == []
        await client.close()
    assert states == [SwitchState.ARMED] * 100
    assert fired == []
    restarts = server.requests_to("/restart")
    assert len(restarts) <= 100 * (300 // 18 + 1)  # no more than the interval needs
    assert [r for r in server.requests if r.status == 429] == []
    assert manager.rate_limited == 0


async def test_a_closing_manager_does_not_report_switches_back_within_the_budget() -> None:
    """Switches beyond the budget are told so once; stopping the others at close frees budget,
    but a manager that is closing plans nothing more, so no `WITHIN_BUDGET` follows."""
    clock = FakeClock()
    async with FakeHomeserver(clock=clock) as server:
        client = await fake_client(server)
        # Half a restart a second keeps about two switches of 5 s.
        client.delayed_events_limits = ServerLimits(RateLimit(0.5, 5), None)
        manager = KeepAliveManager(client, clock=clock, seed=1)
        events: list[SwitchEventKind] = []
        manager.on_event(lambda event: events.append(event.kind))
        for n in range(4):
            await advancing(
                clock,
                manager.add(
                    ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=5), key=str(n)
                ),
            )
        assert SwitchEventKind.OVER_BUDGET in events
        before_close = len(events)
        assert await advancing(clock, manager.close(ExitPolicy.CANCEL)) == []
        await client.close()
    assert SwitchEventKind.WITHIN_BUDGET not in events[before_close:]
    assert events[before_close:].count(SwitchEventKind.STOPPED) == 4


async def test_a_budget_told_too_much_learns_the_servers_rate() -> None:
    """The client believes in 20 requests a second (burst 20); the server allows 5 (burst 5).
    The first bursts are refused; the budget shrinks to what passes and stays there."""
    clock = FakeClock()
    async with FakeHomeserver(clock=clock, management_rate=(5, 5)) as server:
        client = await fake_client(server)
        client.delayed_events_limits = ServerLimits(RateLimit(20, 20), None)
        manager = KeepAliveManager(client, clock=clock, seed=4)
        switches = [
            await manager.add(
                ROOM, "m.room.message", OFFLINE, delay=timedelta(minutes=1), key=str(n)
            )
            for n in range(100)
        ]
        await clock.advance(300)
        states = [s.state for s in switches]
        fired = list(server.room_events)
        learned = manager.capacity().restarts_per_second
        await advancing(clock, manager.close())
        await client.close()
    assert states == [SwitchState.ARMED] * 100
    assert fired == []
    assert learned is not None
    assert learned < 5
    late = [r for r in server.requests_to("/restart") if r.at >= clock.now() - 150]
    refused = [r for r in late if r.status == 429]
    assert len(refused) <= 0.02 * len(late)  # steady state: the limit is not hit over and over


@pytest.mark.parametrize("hint", [2, 10, 25, 3600])
async def test_one_429_with_a_long_hint_fires_nothing_and_is_reported_in_time(
    env: Env, hint: float
) -> None:
    """10 switches of 30 s; one restart is refused with a hint of 2 s up to an hour. A hint is
    a time to wait, never past a deadline: each switch is tried at its last useful moment
    anyway, and the ones whose deadline the hint outlasts are reported at once."""
    switches = [await add(env, key=str(n)) for n in range(10)]
    await env.clock.advance(12)
    body = {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": hint * 1000}
    env.server.inject(Fault(path_contains="/restart", status=429, body=body))
    deadlines: dict[int, float] = {}

    def note(event: SwitchEvent) -> None:
        if event.kind is SwitchEventKind.RATE_LIMITED and not deadlines:
            deadlines.update({id(s): event.at + (s.deadline_in or 0) for s in switches})

    env.manager.on_event(note)
    await env.clock.advance(120)
    assert env.fired() == []
    assert [s.state for s in switches] == [SwitchState.ARMED] * 10
    threatened = [s for s in switches if deadlines[id(s)] - min(deadlines.values()) < hint]
    for switch in threatened if hint > 30 else []:
        warned = [e for e in env.events if e.kind is SwitchEventKind.AT_RISK and e.switch is switch]
        assert warned, switch
        assert warned[0].at < deadlines[id(switch)]


async def test_a_server_that_keeps_refusing_is_probed_once_a_gap_and_fires_are_reported(
    env: Env,
) -> None:
    switches = [await add(env, key=str(n)) for n in range(2)]
    deadlines = {s.delay_id: env.clock.now() + 30 for s in switches}
    hint = {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 3_600_000}
    env.server.inject(Fault(path_contains="/restart", status=429, body=hint, times=None))
    await env.clock.advance(45)
    at_risk = {e.switch.delay_id for e in env.events if e.kind is SwitchEventKind.AT_RISK}
    assert at_risk == set(deadlines)
    reports = [e for e in env.events if e.kind is SwitchEventKind.PROBABLY_FIRED]
    assert sorted(e.switch.delay_id for e in reports) == sorted(deadlines)
    for report in reports:
        assert 0 <= report.at - deadlines[report.switch.delay_id] <= 1.0
    # The hint was obeyed but for one probe at a time (the unlimited budget: one a second).
    assert len(env.server.requests_to("/restart")) <= 45 / 1.0 + 2
    assert [s.state for s in switches] == [SwitchState.PROBABLY_FIRED] * 2


async def test_a_switch_added_while_closing_is_stopped_not_left_behind(env: Env) -> None:
    adding = asyncio.ensure_future(add(env, on_exit=ExitPolicy.CANCEL))
    await asyncio.sleep(0)  # add() is under way...
    closing = asyncio.ensure_future(env.manager.close())  # ...when the manager closes
    with pytest.raises(KeepAliveError, match="closed"):
        await adding
    await closing
    assert env.server.scheduled() == []


# 5. 404 / 409: the event is gone ----------------------------------------------------------------


async def test_gone_without_a_record_is_rearmed_and_alive_republished(env: Env) -> None:
    alive = AliveEvent("org.example.status", {"online": True}, state_key="bot")
    switch = await add(env, alive=alive)
    old = switch.delay_id
    env.server.forget(old)  # as Synapse does after another user's overwrite
    await env.clock.advance(11)
    [lost] = [e for e in env.events if e.kind is SwitchEventKind.LOST]
    assert "the server keeps no record" in lost.message
    assert SwitchEventKind.REARMED in env.kinds()
    assert switch.delay_id != old
    assert switch.state is SwitchState.ARMED
    assert switch.stats.rearms == 1
    assert len(env.server.requests_to("/state/org.example.status/bot")) == 2
    assert [e["delay_id"] for e in env.server.scheduled()] == [switch.delay_id]


async def test_conflict_after_a_fire_is_reported_with_the_outcome(env: Env) -> None:
    switch = await add(env)
    env.server.fire(switch.delay_id)
    await env.clock.advance(11)
    [lost] = [e for e in env.events if e.kind is SwitchEventKind.LOST]
    assert lost.error is not None
    assert lost.error.http_status == 409
    assert "it was sent" in lost.message
    assert switch.state is SwitchState.ARMED


async def test_lost_with_the_stop_policy_ends_in_fired(env: Env) -> None:
    switch = await add(env, on_lost=LostPolicy.STOP)
    env.server.cancel(switch.delay_id)
    await env.clock.advance(11)
    assert switch.state is SwitchState.FIRED
    assert "it was cancelled" in env.events[-1].message
    assert env.manager.switches == []
    assert env.server.scheduled() == []


# 6. no answer until the deadline passes -------------------------------------------------------


async def test_network_down_past_the_deadline_then_back_rearms_exactly_once(env: Env) -> None:
    switch = await add(env)
    deadline = env.clock.now() + 30
    outage = env.server.inject(Fault(path_contains="/restart", drop=True, times=None))
    await env.clock.advance(40)
    [probably] = [e for e in env.events if e.kind is SwitchEventKind.PROBABLY_FIRED]
    assert 0 <= probably.at - deadline <= 1.0  # reported within 1 s of the predicted deadline
    assert len(env.fired()) == 1  # the server did send it: the bot looked dead
    assert SwitchEventKind.REARMED not in env.kinds()  # never a second switch while unsure
    outage.times = 0  # the network is back
    await env.clock.advance(35)
    assert SwitchEventKind.REARMED in env.kinds()
    assert switch.state is SwitchState.ARMED
    assert len(env.server.scheduled()) == 1


async def test_lost_answers_past_the_deadline_then_back_resume_without_rearming(env: Env) -> None:
    """The restarts reached the server (so it never fired); only the answers were lost."""
    switch = await add(env)
    outage = env.server.inject(Fault(path_contains="/restart", drop_answer=True, times=None))
    await env.clock.advance(40)
    assert switch.state is SwitchState.PROBABLY_FIRED
    outage.times = 0
    await env.clock.advance(30)
    assert switch.state is SwitchState.ARMED
    assert SwitchEventKind.RECOVERED in env.kinds()
    assert SwitchEventKind.REARMED not in env.kinds()
    assert env.fired() == []
    assert len(env.server.scheduled()) == 1


# 7. event-loop stalls and host suspends ------------------------------------------------------


async def test_stall_longer_than_the_delay_is_noticed_verified_and_rearmed(env: Env) -> None:
    switch = await add(env)
    await env.clock.settle()
    await env.clock.stall(100)  # the loop was blocked (or the host asleep) for 100 s
    assert env.manager.stalls == 1
    kinds = env.kinds()
    assert SwitchEventKind.PROBABLY_FIRED in kinds
    assert kinds.index(SwitchEventKind.REARMED) > kinds.index(SwitchEventKind.PROBABLY_FIRED)
    assert len(env.fired()) == 1  # the server fired it during the stall
    assert switch.state is SwitchState.ARMED
    assert len(env.server.scheduled()) == 1


async def test_short_stall_restarts_at_once_without_a_fire(env: Env) -> None:
    switch = await add(env)
    await env.clock.settle()
    await env.clock.stall(25)  # past the restart (due at 18-20 s), not past the deadline (30 s)
    assert env.manager.stalls == 1
    assert SwitchEventKind.STALL in env.kinds()
    assert switch.stats.restarts_ok == 1
    await env.clock.advance(60)
    assert env.fired() == []


async def test_stall_before_the_scheduler_slept_is_still_reported(env: Env) -> None:
    """The loop froze right after arming, before the scheduler set its timer: the late restart
    finds its deadline already passed."""
    switch = await add(env)
    await env.clock.stall(100)
    assert SwitchEventKind.PROBABLY_FIRED in env.kinds()
    assert switch.state is SwitchState.ARMED
    assert switch.stats.rearms == 1
    assert len(env.server.scheduled()) == 1


# 8. process restarts -------------------------------------------------------------------------


async def test_message_switches_carry_their_key_and_owner(env: Env) -> None:
    await add(env, key="status")
    [scheduled] = env.server.scheduled()
    assert scheduled["content"] == {
        **OFFLINE,
        "org.nio_delayed.switch": "status",
        "org.nio_delayed.owner": "DEVICE",
    }


async def test_a_delayed_message_that_no_switch_made_is_left_alone(env: Env) -> None:
    reminder = await env.client.room_send_delayed(
        ROOM, "m.room.message", OFFLINE, timedelta(minutes=1)
    )
    await env.manager.close()
    manager = await env.new_manager()
    await manager.add(ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30))
    assert SwitchEventKind.ADOPTED not in env.kinds()
    assert SwitchEventKind.LEFTOVER_CANCELLED not in env.kinds()
    assert reminder.delay_id in {e["delay_id"] for e in env.server.scheduled()}
    await manager.close()
    await manager.client.close()


async def test_restarted_bot_adopts_the_switch_its_previous_process_left(env: Env) -> None:
    first = await add(env, on_exit=ExitPolicy.KEEP)
    await env.manager.close()  # the process dies; its event stays scheduled
    await env.clock.advance(20)
    second_manager = await env.new_manager()
    second = await second_manager.add(ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30))
    assert second.delay_id == first.delay_id
    assert SwitchEventKind.ADOPTED in env.kinds()
    await env.clock.advance(120)
    assert env.fired() == []
    assert len(env.server.scheduled()) == 1
    await second_manager.close()
    await second_manager.client.close()


@pytest.mark.parametrize("why", ["policy", "content changed"])
async def test_leftovers_are_cancelled_after_the_new_switch_is_armed(env: Env, why: str) -> None:
    await add(env, on_exit=ExitPolicy.KEEP)
    await add(env, on_exit=ExitPolicy.KEEP, state_key="x")
    await env.manager.close()
    manager = await env.new_manager()
    if why == "policy":
        await manager.add(
            ROOM,
            "m.room.message",
            OFFLINE,
            delay=timedelta(seconds=30),
            on_leftover=LeftoverPolicy.CANCEL,
        )
    else:
        await manager.add(ROOM, "m.room.message", {**OFFLINE, "v": 2}, delay=timedelta(seconds=30))
    await manager.add(
        ROOM, "m.room.message", {"new": True}, delay=timedelta(seconds=30), state_key="x"
    )
    writes = [r.path for r in env.server.requests if r.method in ("PUT", "POST")][-4:]
    assert "/delayed_event/" in writes[0]  # armed first...
    assert writes[1].endswith("/cancel")  # ...then the leftover cancelled
    assert len(env.server.scheduled()) == 2  # exactly one per key
    assert env.kinds().count(SwitchEventKind.LEFTOVER_CANCELLED) == 2
    await env.clock.advance(60)
    assert env.server.room_events == []
    await manager.close()
    await manager.client.close()


# 9. stopping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "fired", "scheduled"),
    [(ExitPolicy.SEND, 1, 0), (ExitPolicy.CANCEL, 0, 0), (ExitPolicy.KEEP, 0, 1)],
)
async def test_exit_policies(env: Env, policy: ExitPolicy, fired: int, scheduled: int) -> None:
    switch = await add(env, on_exit=policy)
    await switch.stop()
    assert switch.state is SwitchState.STOPPED
    assert (len(env.fired()), len(env.server.scheduled())) == (fired, scheduled)
    await env.clock.advance(20)
    assert len(env.server.requests_to("/restart")) == 0  # stopped restarting


async def test_stop_is_idempotent_and_concurrent_stops_send_once(env: Env) -> None:
    switch = await add(env)
    await asyncio.gather(switch.stop(), switch.stop(), env.manager.close())
    await switch.stop()
    assert len(env.server.requests_to("/send")) == 1
    assert len(env.fired()) == 1
    assert env.kinds().count(SwitchEventKind.STOPPED) == 1


async def test_stop_treats_already_finalised_as_done(env: Env) -> None:
    switch = await add(env)
    env.server.forget(switch.delay_id)
    await switch.stop()
    assert switch.state is SwitchState.STOPPED
    assert "already finalised" in env.events[-1].message
    assert env.events[-1].error is None


async def test_stop_that_cannot_reach_the_server_says_the_event_will_fire(env: Env) -> None:
    switch = await add(env)
    env.server.inject(Fault(path_contains="/send", status=503, body="down", times=None))
    started = env.clock.now()
    assert not await advancing(env.clock, switch.stop())
    assert env.clock.now() - started <= 30.5  # tried until its deadline, then gave up
    assert len(env.server.requests_to("/send")) > 3
    stopped = env.events[-1]
    assert stopped.kind is SwitchEventKind.STOPPED
    assert stopped.error is not None
    assert "fires by itself" in stopped.message


async def test_close_soon_is_safe_from_a_signal_handler(env: Env) -> None:
    switch = await add(env)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, env.manager.close_soon)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(env.manager.wait_closed(), 10)
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert switch.state is SwitchState.STOPPED
    assert env.manager.closed
    with pytest.raises(KeepAliveError, match="closed"):
        await add(env)


async def test_close_soon_before_the_first_switch_still_closes(env: Env) -> None:
    env.manager.close_soon()  # a SIGTERM while the bot is still starting up
    await asyncio.wait_for(env.manager.wait_closed(), 5)
    with pytest.raises(KeepAliveError, match="closed"):
        await add(env)
    assert env.server.scheduled() == []


async def test_client_close_stops_its_switches_by_policy(env: Env) -> None:
    client = env.client
    client.keep_alive.clock = env.clock  # the client's own manager, on the test clock
    async with client.dead_mans_switch(
        ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30)
    ) as switch:
        assert switch.state is SwitchState.ARMED
        await env.clock.advance(25)
        assert switch.stats.restarts_ok >= 2
    assert switch.state is SwitchState.STOPPED
    assert len(env.fired()) == 1  # default exit policy: send it now

    other = await client.keep_alive.add(
        ROOM,
        "m.room.message",
        OFFLINE,
        delay=timedelta(seconds=30),
        on_exit=ExitPolicy.CANCEL,
        key="2",
    )
    await client.close()
    assert other.state is SwitchState.STOPPED
    assert env.server.scheduled() == []


# observability ----------------------------------------------------------------------------------


async def test_events_as_an_async_iterator(env: Env) -> None:
    stream = env.manager.events()
    switch = await add(env)
    await switch.stop()
    stream.close()
    seen = [event.kind async for event in stream]
    assert seen == [SwitchEventKind.ARMED, SwitchEventKind.STOPPED]


async def test_switch_callbacks_and_wait_for(env: Env) -> None:
    switch = await add(env)
    mine: list[SwitchEventKind] = []
    switch.on_event(lambda event: mine.append(event.kind))
    env.server.forget(switch.delay_id)
    waiter = asyncio.ensure_future(
        switch.wait_for(SwitchState.REARMING, timeout=timedelta(seconds=5))
    )
    await env.clock.advance(11)
    assert await waiter is SwitchState.REARMING or switch.state is SwitchState.ARMED
    assert mine == [SwitchEventKind.LOST, SwitchEventKind.REARMED]


async def test_lateness_of_each_restart_is_tracked_on_request() -> None:
    clock = FakeClock()
    async with FakeHomeserver(clock=clock) as server:
        client = await fake_client(server)
        manager = KeepAliveManager(client, clock=clock, track_lateness=True)
        await manager.add(ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30))
        await clock.advance(100)
        lateness = list(manager.lateness or [])
        await manager.close()
        await client.close()
    assert 9 <= len(lateness) <= 10
    assert all(0 <= late < 0.01 for late in lateness)  # on a fake clock: on time


async def test_manager_stats_sum_the_switches(env: Env) -> None:
    await add(env)
    await env.manager.add(ROOM, "m.room.message", OFFLINE, delay=timedelta(minutes=1), key="other")
    await env.clock.advance(61)
    stats = env.manager.stats()
    assert stats.restarts_ok >= 6 + 3
    assert stats.min_margin is not None
    assert stats.min_margin > 19


async def test_a_broken_callback_does_not_stop_the_keep_alive(env: Env) -> None:
    def broken(event: SwitchEvent) -> None:
        raise RuntimeError("bug in the bot")

    env.manager.on_event(broken)
    switch = await add(env)
    await env.clock.advance(60)
    assert switch.state is SwitchState.ARMED
    assert env.fired() == []


async def test_a_full_account_is_said_before_anything_is_sent() -> None:
    """The server keeps at most 3 delayed events for the account: the 4th switch is refused
    with the reason, and no request tries to schedule it."""
    clock = FakeClock()
    async with FakeHomeserver(clock=clock, max_scheduled=3) as server:
        client = await fake_client(server)
        manager = KeepAliveManager(client, clock=clock)
        for n in range(3):
            await manager.add(
                ROOM, "m.room.message", OFFLINE, delay=timedelta(minutes=1), key=str(n)
            )
        scheduling = len(server.requests_to("/send/"))
        with pytest.raises(SwitchArmError, match="maximum"):
            await manager.add(ROOM, "m.room.message", OFFLINE, delay=timedelta(minutes=1), key="4")
        assert len(server.requests_to("/send/")) == scheduling
        assert len(manager.switches) == 3
        await advancing(clock, manager.close())
        await client.close()


# 10. an access token that stops working ------------------------------------------------------

UNKNOWN_TOKEN = {"errcode": "M_UNKNOWN_TOKEN", "error": "Token expired", "soft_logout": True}


def paused(env: Env) -> list[SwitchEvent]:
    return [e for e in env.events if e.kind is SwitchEventKind.UNAUTHORIZED]


async def test_a_refused_token_pauses_every_switch_at_once_and_sends_no_more(env: Env) -> None:
    first, second = await add(env, key="a"), await add(env, key="b")
    refused = env.server.inject(
        Fault(path_contains="/restart", status=401, body=UNKNOWN_TOKEN, times=None)
    )
    await env.clock.advance(11)  # the first restart is refused
    assert (first.state, second.state) == (SwitchState.UNAUTHORIZED, SwitchState.UNAUTHORIZED)
    events = paused(env)
    assert {e.switch for e in events} == {first, second}
    assert all(e.error is not None and e.error.soft_logout for e in events)
    assert "resume()" in events[0].message
    asked = len(env.server.requests)
    await env.clock.advance(120)  # the delay runs out: no retries, no reports, it fires
    assert len(env.server.requests) == asked
    assert len(env.fired()) == 2
    assert len(paused(env)) == 2
    assert SwitchEventKind.RESTART_FAILED not in env.kinds()
    assert (first.state, second.state) == (SwitchState.UNAUTHORIZED, SwitchState.UNAUTHORIZED)
    refused.times = 0  # a working token again
    assert set(env.manager.resume()) == {first, second}
    await env.clock.advance(1)  # past the deadline: verified as gone, then re-armed
    assert (first.state, second.state) == (SwitchState.ARMED, SwitchState.ARMED)
    assert env.kinds().count(SwitchEventKind.REARMED) == 2
    assert len(env.server.scheduled()) == 2


async def test_a_new_token_before_the_deadline_resumes_without_a_fire(env: Env) -> None:
    switch = await add(env)
    env.server.log_out(env.client.access_token)
    await env.clock.advance(11)
    assert switch.state is SwitchState.UNAUTHORIZED
    [event] = paused(env)
    assert event.error is not None
    assert (event.error.errcode, event.error.soft_logout) == ("M_UNKNOWN_TOKEN", False)
    assert "soft logout" not in event.message
    env.client.access_token = env.server.add_user(env.client.user_id)
    [resumed] = env.manager.resume()
    assert resumed is switch
    await env.clock.advance(1)
    assert switch.state is SwitchState.ARMED
    assert SwitchEventKind.RECOVERED in env.kinds()
    assert SwitchEventKind.REARMED not in env.kinds()
    await env.clock.advance(60)
    assert env.fired() == []
    assert env.manager.resume() == []  # nothing paused: nothing to do


async def test_resuming_with_a_token_still_refused_pauses_again_after_one_request(
    env: Env,
) -> None:
    switch = await add(env)
    env.server.log_out(env.client.access_token, soft_logout=True)
    await env.clock.advance(11)
    env.manager.resume()
    await env.clock.advance(30)
    assert switch.state is SwitchState.UNAUTHORIZED
    assert len(env.server.requests_to("/restart")) == 2  # the first refused, one after resume()
    assert len(paused(env)) == 2


async def test_a_rearm_refused_for_the_token_pauses_and_resume_rearms(env: Env) -> None:
    alive = AliveEvent("org.example.status", {"online": True}, state_key="bot")
    switch = await add(env, alive=alive)
    env.server.cancel(switch.delay_id)
    refused = env.server.inject(
        Fault(path_contains="/delayed_event/", status=401, body=UNKNOWN_TOKEN, times=None)
    )
    await env.clock.advance(11)  # the restart says gone; the re-arm is refused
    assert switch.state is SwitchState.UNAUTHORIZED
    assert SwitchEventKind.FAILED not in env.kinds()
    refused.times = 0
    env.manager.resume()
    await env.clock.advance(1)
    assert switch.state is SwitchState.ARMED
    assert env.kinds()[-2:] == [SwitchEventKind.REARMED, SwitchEventKind.ALIVE_PUBLISHED]


async def test_a_paused_switch_can_be_stopped_and_a_refused_stop_says_so(env: Env) -> None:
    switch = await add(env)
    env.server.log_out(env.client.access_token)
    await env.clock.advance(11)
    assert not await switch.stop()  # one try: the token is still refused
    assert len(env.server.requests_to("/send")) == 1
    stopped = env.events[-1]
    assert (stopped.kind, switch.state) == (SwitchEventKind.STOPPED, SwitchState.STOPPED)
    assert stopped.error is not None
    assert stopped.error.kind.value == "unauthorized"
    assert "fires by itself" in stopped.message


async def test_a_switch_added_with_a_refused_token_raises_and_pauses_the_others(env: Env) -> None:
    running = await add(env, key="a")
    env.server.log_out(env.client.access_token)
    with pytest.raises(SwitchArmError, match="Unknown access token") as caught:
        await add(env, key="b")
    assert caught.value.error is not None
    assert caught.value.error.kind.value == "unauthorized"
    assert running.state is SwitchState.UNAUTHORIZED
    assert env.manager.switches == [running]
