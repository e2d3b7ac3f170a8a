"""The state-overwrite guard, on the fake homeserver with and without the server-side rule.

Synapse cancels a delayed state event when another user writes the same state; the merged MSC
leaves that rule to its alternatives. The guard makes a switch behave the same either way: it sees
the other user's write in the client's sync and applies ``on_overwrite`` at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from nio_delayed import (
    AliveEvent,
    DeadMansSwitch,
    DelayedAsyncClient,
    KeepAliveManager,
    OverwritePolicy,
    SwitchEvent,
    SwitchEventKind,
    SwitchState,
)
from nio_delayed.testing import FakeClock, FakeHomeserver, Fault

from .conftest import fake_client

ROOM = "!room:fake"
STATUS = "org.example.status"
OFFLINE = {"online": False}
ONLINE = {"online": True}


@dataclass
class Env:
    clock: FakeClock
    server: FakeHomeserver
    client: DelayedAsyncClient
    manager: KeepAliveManager
    other_token: str
    events: list[SwitchEvent] = field(default_factory=list)

    async def add(self, policy: OverwritePolicy) -> DeadMansSwitch:
        return await self.manager.add(
            ROOM,
            STATUS,
            OFFLINE,
            state_key="bot",
            delay=timedelta(seconds=30),
            alive=AliveEvent(STATUS, ONLINE, state_key="bot"),
            on_overwrite=policy,
        )

    async def other_user_writes(self, content: dict[str, Any]) -> None:
        url = f"{self.server.url}/_matrix/client/v3/rooms/{ROOM}/state/{STATUS}/bot"
        headers = {"Authorization": f"Bearer {self.other_token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.put(url, json=content, headers=headers) as answer,
        ):
            assert answer.status == 200

    async def sync(self) -> None:
        await self.client.sync(timeout=0)
        await self.clock.settle()

    def status_writes(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (e["sender"], e["content"])
            for e in self.server.room_events
            if e["type"] == STATUS and e.get("state_key") == "bot"
        ]

    def overwritten(self) -> SwitchEvent:
        [event] = [e for e in self.events if e.kind is SwitchEventKind.OVERWRITTEN]
        return event


@contextlib.asynccontextmanager
async def make_env(server_rule: bool) -> AsyncIterator[Env]:
    clock = FakeClock()
    async with FakeHomeserver(clock=clock, state_overwrite_rule=server_rule) as server:
        client = await fake_client(server)
        manager = KeepAliveManager(
            client, clock=clock, seed=1, request_timeout=timedelta(seconds=5)
        )
        environment = Env(clock, server, client, manager, server.add_user("@admin:fake"))
        manager.on_event(environment.events.append)
        yield environment
        await manager.close()
        await client.close()


@pytest.fixture(params=[False, True], ids=["no-server-rule", "server-rule"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    async with make_env(server_rule=request.param) as environment:
        yield environment


async def test_cancel_stops_the_switch_and_leaves_their_state_alone(env: Env) -> None:
    switch = await env.add(OverwritePolicy.CANCEL)
    await env.other_user_writes({"online": "maintenance"})
    await env.sync()
    assert switch.state is SwitchState.OVERWRITTEN
    assert env.server.scheduled() == []
    assert env.manager.switches == []
    message = env.overwritten().message
    assert "@admin:fake wrote org.example.status 'bot'" in message
    assert ("cancelled by state update" in message) == env.server.state_overwrite_rule
    await env.clock.advance(120)  # nothing of ours lands on their state, ever
    assert env.status_writes()[-1] == ("@admin:fake", {"online": "maintenance"})


async def test_rearm_arms_a_new_event_and_publishes_alive_again(env: Env) -> None:
    switch = await env.add(OverwritePolicy.REARM)
    old = switch.delay_id
    await env.other_user_writes({"online": "maintenance"})
    await env.sync()
    assert switch.state is SwitchState.ARMED
    assert switch.delay_id != old
    assert [e["delay_id"] for e in env.server.scheduled()] == [switch.delay_id]
    assert env.status_writes()[-1] == ("@bot:fake", ONLINE)
    kinds = [e.kind for e in env.events]
    assert kinds[-3:] == [
        SwitchEventKind.OVERWRITTEN,
        SwitchEventKind.REARMED,
        SwitchEventKind.ALIVE_PUBLISHED,
    ]
    assert ("cancelled by state update" in env.overwritten().message) == (
        env.server.state_overwrite_rule
    )


async def test_ignore_keeps_a_switch_armed_without_touching_their_state(env: Env) -> None:
    switch = await env.add(OverwritePolicy.IGNORE)
    old = switch.delay_id
    await env.other_user_writes({"online": "maintenance"})
    await env.sync()
    assert switch.state is SwitchState.ARMED
    # Without the rule the same event stays armed; with it, a new one replaces it quietly.
    assert (switch.delay_id != old) == env.server.state_overwrite_rule
    assert [e["delay_id"] for e in env.server.scheduled()] == [switch.delay_id]
    assert env.status_writes()[-1] == ("@admin:fake", {"online": "maintenance"})
    await env.clock.advance(120)
    assert env.status_writes()[-1] == ("@admin:fake", {"online": "maintenance"})
    assert switch.state is SwitchState.ARMED


async def test_the_guard_acts_at_once_not_at_the_next_restart(env: Env) -> None:
    switch = await env.add(OverwritePolicy.CANCEL)
    restarts_before = len(env.server.requests_to("/restart"))
    await env.other_user_writes({"online": "maintenance"})
    at = env.clock.now()
    await env.sync()
    assert switch.state is SwitchState.OVERWRITTEN
    assert env.overwritten().at == at  # no time passed on the keep-alive clock
    assert len(env.server.requests_to("/restart")) == restarts_before


async def test_own_writes_and_writes_from_before_the_switch_are_not_overwrites(env: Env) -> None:
    await env.other_user_writes({"online": "old news"})  # before the switch existed
    switch = await env.add(OverwritePolicy.CANCEL)  # its own alive write follows
    await env.sync()
    await env.clock.advance(60)
    assert switch.state is SwitchState.ARMED
    assert not [e for e in env.events if e.kind is SwitchEventKind.OVERWRITTEN]


async def test_without_a_sync_a_server_side_cancel_is_still_attributed() -> None:
    """No sync loop: Synapse's rule shows as a 404 on the next restart. The guard then looks at
    the current state, sees the other user's write and applies ``on_overwrite``, not
    ``on_lost``."""
    async with make_env(server_rule=True) as env:
        switch = await env.add(OverwritePolicy.CANCEL)
        await env.other_user_writes({"online": "maintenance"})
        await env.clock.advance(11)
        assert switch.state is SwitchState.OVERWRITTEN
        assert "cancelled by state update" in env.overwritten().message
        assert not [e for e in env.events if e.kind is SwitchEventKind.LOST]


async def test_a_guard_that_cannot_cancel_yet_retries_and_says_so() -> None:
    async with make_env(server_rule=False) as env:
        switch = await env.add(OverwritePolicy.CANCEL)
        env.server.inject(Fault(path_contains="/cancel", status=503, times=2))
        await env.other_user_writes({"online": "maintenance"})
        await env.sync()
        assert switch.state is SwitchState.AT_RISK
        assert "could not cancel ours yet" in env.events[-1].message
        await env.clock.advance(5)
        assert switch.state is SwitchState.OVERWRITTEN
        assert env.server.scheduled() == []


async def test_the_same_write_seen_again_in_a_later_sync_is_handled_once() -> None:
    async with make_env(server_rule=False) as env:
        await env.add(OverwritePolicy.IGNORE)
        await env.other_user_writes({"online": "maintenance"})
        await env.sync()
        await env.client.sync(timeout=0, since="0")  # a sync that repeats the whole history
        await env.clock.settle()
        env.overwritten()  # exactly one report
        assert len(env.server.requests_to("/delayed_events/fake_")) == 1  # one look-up
