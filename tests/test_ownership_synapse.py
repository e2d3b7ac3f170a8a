"""Two devices of one bot account on real Synapse: a switch leaves the other device's delayed
state event alone, and a rolling deploy hands a switch from one process to the next without a
false "offline" reaching a watching user."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from nio import JoinResponse, LoginResponse, RoomCreateResponse

from nio_delayed import (
    DelayedAsyncClient,
    DelayedEventsListResponse,
    ExitPolicy,
    KeepAliveManager,
    RoomPutStateDelayedResponse,
    SwitchEvent,
    SwitchEventKind,
    SwitchState,
    UpdateDelayedEventResponse,
)
from nio_delayed.devserver import DevServer
from nio_delayed.testing import FaultProxy, ProxyFaults

from .conftest import Room, login, unique

pytestmark = pytest.mark.synapse

OFFLINE = {"msgtype": "m.notice", "body": "bot offline"}


@dataclass
class TwoDevices:
    room: Room  # the bot's first device, and the watcher
    second: DelayedAsyncClient  # the same account, logged in again: another device


@pytest.fixture
async def two_devices(synapse: DevServer) -> AsyncIterator[TwoDevices]:
    bot_user = synapse.register_user(unique("bot"))
    watcher_user = synapse.register_user(unique("watcher"))
    bot, watcher = await login(synapse, bot_user), await login(synapse, watcher_user)
    second = DelayedAsyncClient(synapse.url, bot_user.user_id)
    second.delayed_events_limits = synapse.limits
    try:
        logged_in = await second.login(bot_user.password, device_name="second process")
        assert isinstance(logged_in, LoginResponse), logged_in
        assert second.device_id != bot.device_id
        created = await bot.room_create(invite=[watcher_user.user_id])
        assert isinstance(created, RoomCreateResponse), created
        assert isinstance(await watcher.join(created.room_id), JoinResponse)
        yield TwoDevices(Room(synapse, created.room_id, bot, watcher), second)
    finally:
        for client in (bot, watcher, second):
            await client.close()


async def offline_seen(room: Room) -> int:
    """How many "offline" messages the watching user has received."""
    return sum(1 for e in await room.messages() if e["content"].get("body") == "bot offline")


async def scheduled_ids(client: DelayedAsyncClient) -> set[str]:
    listing = await client.delayed_events()
    assert isinstance(listing, DelayedEventsListResponse), listing
    return {e.delay_id for e in listing.scheduled}


async def test_another_devices_delayed_state_event_survives_a_switch_next_to_it(
    two_devices: TwoDevices,
) -> None:
    """The other device (a web client, say) schedules the same state the switch guards: the
    switch starts, runs and stops (sending its own event) without touching it."""
    room, web = two_devices.room, two_devices.second
    theirs = await web.room_put_state_delayed(
        room.room_id, "org.example.status", {"in_call": False}, 60_000, "bot"
    )
    assert isinstance(theirs, RoomPutStateDelayedResponse), theirs
    events: list[SwitchEvent] = []
    async with KeepAliveManager(room.bot) as manager:
        manager.on_event(events.append)
        switch = await manager.add(
            room.room_id, "org.example.status", {"online": False}, state_key="bot", delay=3000
        )
        assert switch.delay_id != theirs.delay_id
        await asyncio.sleep(2.5)  # restarted a few times
    assert switch.state is SwitchState.STOPPED  # on_exit: its own event was sent
    assert await scheduled_ids(web) == {theirs.delay_id}
    assert SwitchEventKind.FOREIGN_LEFTOVER in [e.kind for e in events]
    assert not {SwitchEventKind.ADOPTED, SwitchEventKind.LEFTOVER_CANCELLED} & {
        e.kind for e in events
    }
    tidy = await web.cancel_delayed_event(theirs.delay_id)  # it would fire in a minute
    assert isinstance(tidy, UpdateDelayedEventResponse), tidy


async def test_a_rolling_deploy_to_another_device_hands_the_switch_over(
    two_devices: TwoDevices,
) -> None:
    """The bot names its owner, so that a process on another device is the same bot. The new
    process comes up and adopts, the old one exits with KEEP: the watcher sees no "offline",
    and the new process then owns the switch (its exit sends it, once)."""
    room = two_devices.room
    old = KeepAliveManager(room.bot, owner="status-bot")
    new = KeepAliveManager(two_devices.second, owner="status-bot")
    events: list[SwitchEvent] = []
    new.on_event(events.append)
    try:
        old_switch = await old.add(room.room_id, "m.room.message", OFFLINE, delay=3000)
        await asyncio.sleep(1.5)
        new_switch = await new.add(room.room_id, "m.room.message", OFFLINE, delay=3000)
        assert new_switch.delay_id == old_switch.delay_id
        assert SwitchEventKind.ADOPTED in [e.kind for e in events]
        await asyncio.sleep(1.5)  # both processes run
        assert await old.close(ExitPolicy.KEEP) == []
        await asyncio.sleep(7)  # more than two delays after the old process went
        assert await offline_seen(room) == 0
        assert new_switch.state is SwitchState.ARMED
        assert await scheduled_ids(room.bot) == {new_switch.delay_id}
        assert await new.close() == []  # on_exit: send it now

        async def sent() -> bool:
            return await offline_seen(room) == 1

        await room.wait_for(sent, timeout=10)
        await asyncio.sleep(1)
        assert await offline_seen(room) == 1
    finally:
        await old.close()
        await new.close()


async def test_a_lost_answer_to_a_state_arming_finds_our_event_not_the_other_devices(
    two_devices: TwoDevices,
) -> None:
    """Released Synapse schedules state without a transaction id: when the answer is lost, the
    switch looks for the event it may have scheduled before trying again. The other device's
    event on the same key, there since before, is not it."""
    room, web = two_devices.room, two_devices.second
    theirs = await web.room_put_state_delayed(
        room.room_id, "org.example.status", {"online": False}, 60_000, "bot"
    )
    assert isinstance(theirs, RoomPutStateDelayedResponse), theirs
    async with FaultProxy(room.server.url) as proxy:
        bot = DelayedAsyncClient(proxy.url, room.bot.user_id)
        bot.restore_login(room.bot.user_id, room.bot.device_id, room.bot.access_token)
        bot.delayed_events_limits = room.server.limits
        manager = KeepAliveManager(bot)
        try:
            await manager.start()
            proxy.faults = ProxyFaults(reset_chance=1.0)  # the server acts, the answer is lost

            async def arming_seen() -> bool:
                return any("/state/" in r.path for r in proxy.requests)

            async def heal_after_the_arming() -> None:
                await room.wait_for(arming_seen, timeout=10, interval=0.001)
                proxy.heal()

            healer = asyncio.create_task(heal_after_the_arming())
            switch = await manager.add(
                room.room_id, "org.example.status", {"online": False}, state_key="bot", delay=5000
            )
            await healer
            assert [r.fault for r in proxy.requests if "/state/" in r.path] == ["reset"]
            assert switch.delay_id not in (None, theirs.delay_id)
            assert await scheduled_ids(room.bot) == {theirs.delay_id, switch.delay_id}
        finally:
            with contextlib.suppress(Exception):
                await manager.close(ExitPolicy.CANCEL)
            await bot.close()
    assert await scheduled_ids(room.bot) == {theirs.delay_id}
    tidy = await web.cancel_delayed_event(theirs.delay_id)
    assert isinstance(tidy, UpdateDelayedEventResponse), tidy
