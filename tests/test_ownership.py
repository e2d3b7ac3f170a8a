"""Switches that know whose they are, against the fake homeserver: a switch adopts or cancels
only what its own owner armed (this device, or the bot's configured owner id), leaves every other
device's and program's delayed events alone and reports them; a rolling deploy hands a switch
over without a false "offline"; and on a server without a listing, the bot's local record finds
its leftovers."""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nio_delayed import (
    DeadMansSwitch,
    DelayedAsyncClient,
    ExitPolicy,
    InvalidInput,
    KeepAliveError,
    KeepAliveManager,
    LeftoverPolicy,
    RoomPutStateDelayedResponse,
    RoomSendDelayedResponse,
    SwitchEvent,
    SwitchEventKind,
    SwitchState,
)
from nio_delayed.testing import FakeClock, FakeHomeserver

T = TypeVar("T")
USER = "@bot:fake"
ROOM = "!room:fake"
OFFLINE = {"msgtype": "m.notice", "body": "bot offline"}
STATUS = "org.example.status"
CALL = "org.matrix.msc3401.call.member"


async def advancing(clock: FakeClock, awaitable: Awaitable[T], step: float = 0.5) -> T:
    """Await ``awaitable`` while time passes (stops may wait for the request budget)."""
    task = asyncio.ensure_future(awaitable)
    while not task.done():
        await clock.advance(step)
    return task.result()


@dataclass
class Account:
    """One account on the fake homeserver, with as many devices (clients) as a test needs."""

    clock: FakeClock
    server: FakeHomeserver
    events: list[SwitchEvent] = field(default_factory=list)
    clients: list[DelayedAsyncClient] = field(default_factory=list)
    managers: list[KeepAliveManager] = field(default_factory=list)

    def device(self, device_id: str = "DEVICE") -> DelayedAsyncClient:
        client = DelayedAsyncClient(self.server.url, USER)
        client.restore_login(USER, device_id, self.server.add_user(USER))
        client.delayed_events_limits = self.server.limits
        self.clients.append(client)
        return client

    def manager(self, device_id: str = "DEVICE", **options: Any) -> KeepAliveManager:
        """A bot process on ``device_id``."""
        manager = KeepAliveManager(self.device(device_id), clock=self.clock, seed=1, **options)
        manager.on_event(self.events.append)
        self.managers.append(manager)
        return manager

    def kinds(self) -> list[SwitchEventKind]:
        return [e.kind for e in self.events]

    def scheduled_ids(self) -> set[str]:
        return {e["delay_id"] for e in self.server.scheduled()}

    def offline_sent(self) -> int:
        return sum(1 for e in self.server.room_events if e["content"].get("body") == "bot offline")


async def on_fake_homeserver(**options: Any) -> AsyncIterator[Account]:
    clock = FakeClock()
    async with FakeHomeserver(clock=clock, **options) as server:
        account = Account(clock, server)
        yield account
        for manager in account.managers:
            await advancing(clock, manager.close())
        for client in account.clients:
            await client.close()


@pytest.fixture
async def account() -> AsyncIterator[Account]:
    async for account in on_fake_homeserver():
        yield account


@pytest.fixture
async def unlisted() -> AsyncIterator[Account]:
    """A server that follows the merged MSC4140 and has no listing at all (no MSC4486)."""
    async for account in on_fake_homeserver(msc4486=False):
        yield account


async def status_switch(manager: KeepAliveManager, **options: Any) -> DeadMansSwitch:
    return await manager.add(
        ROOM, STATUS, {"online": False}, state_key="bot", delay=timedelta(seconds=30), **options
    )


# -- whose a leftover is ------------------------------------------------------------------------


@pytest.mark.parametrize("exit_policy", [ExitPolicy.SEND, ExitPolicy.CANCEL])
@pytest.mark.parametrize("on_leftover", [LeftoverPolicy.ADOPT, LeftoverPolicy.CANCEL])
async def test_another_clients_delayed_state_event_survives_a_switch_next_to_it(
    account: Account,
    caplog: pytest.LogCaptureFixture,
    exit_policy: ExitPolicy,
    on_leftover: LeftoverPolicy,
) -> None:
    """A web client of the same account (no marker of ours) scheduled the same state: the
    switch neither adopts nor cancels it, at start or at stop, and says so at WARNING."""
    web = account.device("WEBCLIENT")
    theirs = await web.room_put_state_delayed(
        ROOM, STATUS, {"in_call": False}, timedelta(minutes=1), "bot"
    )
    assert isinstance(theirs, RoomPutStateDelayedResponse)
    caplog.set_level(logging.WARNING, "nio_delayed")
    manager = account.manager()
    switch = await status_switch(manager, on_leftover=on_leftover)
    assert switch.delay_id != theirs.delay_id
    await advancing(account.clock, switch.stop(exit_policy))
    assert theirs.delay_id in account.scheduled_ids()
    assert SwitchEventKind.ADOPTED not in account.kinds()
    assert SwitchEventKind.LEFTOVER_CANCELLED not in account.kinds()
    [foreign] = [e for e in account.events if e.kind is SwitchEventKind.FOREIGN_LEFTOVER]
    assert "no owner marker" in foreign.message
    [logged] = [r for r in caplog.records if "foreign_leftover" in r.getMessage()]
    assert logged.levelno == logging.WARNING
    line = logged.getMessage()
    assert ROOM in line
    assert STATUS in line
    assert theirs.delay_id not in line  # shortened, never whole


@pytest.mark.parametrize("state_key", [None, "bot"])
async def test_another_devices_switch_is_left_alone(
    account: Account, state_key: str | None
) -> None:
    """Two devices of the account run the same switch: each keeps its own event."""
    other = await account.manager("LAPTOP").add(
        ROOM, "m.room.message", OFFLINE, state_key=state_key, delay=timedelta(seconds=30)
    )
    ours = await account.manager("SERVER").add(
        ROOM, "m.room.message", OFFLINE, state_key=state_key, delay=timedelta(seconds=30)
    )
    assert ours.delay_id != other.delay_id
    assert account.scheduled_ids() == {ours.delay_id, other.delay_id}
    [foreign] = [e for e in account.events if e.kind is SwitchEventKind.FOREIGN_LEFTOVER]
    assert "armed by owner 'LAPTOP'" in foreign.message
    assert foreign.switch is ours


async def test_the_same_device_adopts_its_previous_processs_switch(account: Account) -> None:
    first = await status_switch(account.manager(), on_exit=ExitPolicy.KEEP)
    await account.managers[0].close()  # as a crash would: its event stays scheduled
    second = await status_switch(account.manager())
    assert second.delay_id == first.delay_id
    assert SwitchEventKind.ADOPTED in account.kinds()
    [scheduled] = account.server.scheduled()
    assert scheduled["content"] == {"online": False, "org.nio_delayed.owner": "DEVICE"}


async def test_a_bot_with_a_fixed_owner_adopts_across_devices(account: Account) -> None:
    """A bot that logs in anew at every start (a new device) names its owner."""
    first = await status_switch(account.manager("FIRST", owner="status-bot"), on_exit="keep")
    await account.managers[0].close()
    second = await status_switch(account.manager("SECOND", owner="status-bot"))
    assert second.delay_id == first.delay_id
    assert account.scheduled_ids() == {first.delay_id}


async def test_an_earlier_versions_message_switch_is_still_adopted(account: Account) -> None:
    """Messages armed before switches had owners carry our switch key and no owner marker:
    only this library writes that key, so they are this bot's."""
    earlier = account.device()
    content = {**OFFLINE, "org.nio_delayed.switch": "default"}
    left = await earlier.room_send_delayed(ROOM, "m.room.message", content, timedelta(seconds=30))
    assert isinstance(left, RoomSendDelayedResponse)
    switch = await account.manager().add(
        ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30)
    )
    assert switch.delay_id == left.delay_id
    assert SwitchEventKind.ADOPTED in account.kinds()


async def test_an_unmarked_state_event_is_never_taken_even_with_the_same_content(
    account: Account,
) -> None:
    """Any client may have scheduled it: an earlier version's state switch, or a web client's
    event that happens to have the switch's content."""
    web = account.device("WEBCLIENT")
    theirs = await web.room_put_state_delayed(
        ROOM, STATUS, {"online": False}, timedelta(seconds=30), "bot"
    )
    assert isinstance(theirs, RoomPutStateDelayedResponse)
    switch = await status_switch(account.manager())
    assert account.scheduled_ids() == {theirs.delay_id, switch.delay_id}
    assert SwitchEventKind.FOREIGN_LEFTOVER in account.kinds()


async def test_an_earlier_versions_message_with_other_text_is_replaced(account: Account) -> None:
    earlier = account.device()
    content = {"msgtype": "m.notice", "body": "old text", "org.nio_delayed.switch": "default"}
    left = await earlier.room_send_delayed(ROOM, "m.room.message", content, timedelta(seconds=30))
    assert isinstance(left, RoomSendDelayedResponse)
    switch = await account.manager().add(
        ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30)
    )
    assert account.scheduled_ids() == {switch.delay_id}
    assert SwitchEventKind.LEFTOVER_CANCELLED in account.kinds()


async def test_a_client_without_a_device_id_must_name_its_owner(account: Account) -> None:
    client = DelayedAsyncClient(account.server.url, USER)
    client.access_token = account.server.add_user(USER)  # a token set by hand: no device id
    account.clients.append(client)
    with pytest.raises(KeepAliveError, match="no owner was given"):
        await KeepAliveManager(client, clock=account.clock).add(
            ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30)
        )
    assert account.server.requests == []
    manager = KeepAliveManager(client, clock=account.clock, owner="status-bot")
    account.managers.append(manager)
    await manager.add(ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30))
    [scheduled] = account.server.scheduled()
    assert scheduled["content"]["org.nio_delayed.owner"] == "status-bot"


# -- exact content --------------------------------------------------------------------------


async def test_an_exact_content_switch_sends_its_content_as_given_and_owns_its_device_key(
    account: Account,
) -> None:
    """MatrixRTC's legacy call membership: a per-device state key, and an empty leave."""
    key = f"_{USER}_DEVICE_m.call"
    first = await account.manager().add(
        ROOM,
        CALL,
        {},
        state_key=key,
        delay=timedelta(seconds=30),
        exact_content=True,
        on_exit="keep",
    )
    [scheduled] = account.server.scheduled()
    assert scheduled["content"] == {}
    assert first.exact_content
    await account.managers[0].close()
    second = await account.manager().add(
        ROOM, CALL, {}, state_key=key, delay=timedelta(seconds=30), exact_content=True
    )
    assert second.delay_id == first.delay_id
    await advancing(account.clock, second.stop())  # sends the empty leave now
    [left] = account.server.room_events
    assert (left["state_key"], left["content"]) == (key, {})


async def test_exact_content_is_refused_where_leftovers_could_not_be_told_apart(
    account: Account,
) -> None:
    manager = account.manager()
    with pytest.raises(InvalidInput, match="state switches"):
        await manager.add(
            ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30), exact_content=True
        )
    with pytest.raises(InvalidInput, match="per-device key"):
        await manager.add(
            ROOM, CALL, {}, state_key="shared", delay=timedelta(seconds=30), exact_content=True
        )
    # The owner id must be a whole segment of the key, not any substring of it.
    with pytest.raises(InvalidInput, match="per-device key"):
        await manager.add(
            ROOM,
            CALL,
            {},
            state_key=f"_X{manager.owner}X_",
            delay=timedelta(seconds=30),
            exact_content=True,
        )
    assert account.server.requests == []


async def test_the_record_owns_an_exact_content_switch_on_a_shared_key(
    account: Account, tmp_path: Path
) -> None:
    """Without a per-device key, the record says which leftover is this bot's; another
    device's event of the same content is left alone."""
    web = account.device("WEBCLIENT")
    theirs = await web.room_put_state_delayed(ROOM, CALL, {}, timedelta(minutes=1), "shared")
    assert isinstance(theirs, RoomPutStateDelayedResponse)
    options: dict[str, Any] = {
        "state_key": "shared",
        "delay": timedelta(seconds=30),
        "exact_content": True,
    }
    first = await account.manager(record_dir=tmp_path).add(
        ROOM, CALL, {}, on_exit="keep", **options
    )
    await account.managers[-1].close()
    second = await account.manager(record_dir=tmp_path).add(ROOM, CALL, {}, **options)
    assert second.delay_id == first.delay_id
    assert account.scheduled_ids() == {first.delay_id, theirs.delay_id}
    assert SwitchEventKind.FOREIGN_LEFTOVER in account.kinds()


async def test_a_new_device_finds_its_previous_switch_in_the_record(
    account: Account, tmp_path: Path
) -> None:
    """A bot that gets a new device at every start, without a fixed owner: its record says the
    old device's event is its own."""
    first = await status_switch(account.manager("FIRST", record_dir=tmp_path), on_exit="keep")
    await account.managers[0].close()
    second = await status_switch(account.manager("SECOND", record_dir=tmp_path))
    assert second.delay_id == first.delay_id
    assert SwitchEventKind.FOREIGN_LEFTOVER not in account.kinds()


# -- rolling deploys ------------------------------------------------------------------------


@pytest.mark.parametrize("devices", [("DEVICE", "DEVICE"), ("BLUE", "GREEN")])
async def test_a_rolling_deploy_hands_the_switch_over_without_a_false_offline(
    account: Account, devices: tuple[str, str]
) -> None:
    """The new process (same device, or another with the same owner) comes up and adopts; the
    old one exits with KEEP. Nothing is sent, the new process then owns the switch."""
    old_device, new_device = devices
    old = account.manager(old_device, owner="status-bot")
    old_switch = await old.add(ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30))
    await account.clock.advance(12)  # the old process is running
    new = account.manager(new_device, owner="status-bot")
    new_switch = await new.add(ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30))
    assert new_switch.delay_id == old_switch.delay_id
    await account.clock.advance(5)  # both run for a while
    assert await advancing(account.clock, old.close(ExitPolicy.KEEP)) == []
    assert old_switch.state is SwitchState.STOPPED
    await account.clock.advance(120)  # four delays: the new process keeps the event alive
    assert account.offline_sent() == 0
    assert new_switch.state is SwitchState.ARMED
    assert new_switch.stats.restarts_ok >= 5
    await advancing(account.clock, new.close())  # the new process's exit sends it, once
    assert account.offline_sent() == 1


async def test_a_signal_handler_can_hand_the_switches_over(account: Account) -> None:
    manager = account.manager()
    switch = await manager.add(ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30))
    manager.close_soon(ExitPolicy.KEEP)  # as loop.add_signal_handler(SIGTERM, ...) calls it
    await advancing(account.clock, manager.wait_closed())
    assert switch.state is SwitchState.STOPPED
    assert account.scheduled_ids() == {switch.delay_id}


async def test_a_rolling_deploy_with_distinct_owners_stops_the_old_one_with_cancel(
    account: Account,
) -> None:
    """Distinct owners run side by side, each with its own event: the old one cancels its own
    at exit, and the new one's stays."""
    old = account.manager("BLUE")
    old_switch = await old.add(ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30))
    new = account.manager("GREEN")
    new_switch = await new.add(ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30))
    assert new_switch.delay_id != old_switch.delay_id
    await advancing(account.clock, old.close(ExitPolicy.CANCEL))
    await account.clock.advance(120)
    assert account.offline_sent() == 0
    assert account.scheduled_ids() == {new_switch.delay_id}


# -- a server without a listing: the local record ---------------------------------------------


async def test_without_a_listing_a_restarted_bot_adopts_from_its_record(
    unlisted: Account, tmp_path: Path
) -> None:
    first = await status_switch(unlisted.manager(record_dir=tmp_path), on_exit="keep")
    await unlisted.managers[0].close()
    await unlisted.clock.advance(20)
    second = await status_switch(unlisted.manager(record_dir=tmp_path))
    assert second.delay_id == first.delay_id
    assert SwitchEventKind.ADOPTED in unlisted.kinds()
    await unlisted.clock.advance(120)
    assert unlisted.server.room_events == []  # it never fired across the restart
    await advancing(unlisted.clock, second.stop(ExitPolicy.CANCEL))
    assert not list((tmp_path / "nio-delayed-switches").glob("*.json"))  # ended: forgotten


async def test_without_a_listing_or_a_record_a_crashed_processs_leftover_fires(
    unlisted: Account, caplog: pytest.LogCaptureFixture
) -> None:
    """What is lost without a record: switches still run, but a leftover cannot be found."""
    caplog.set_level(logging.WARNING, "nio_delayed")
    first = await status_switch(unlisted.manager(), on_exit="keep")
    await unlisted.managers[0].close()
    second = await status_switch(unlisted.manager())
    assert second.delay_id != first.delay_id
    assert any("no record_dir" in r.getMessage() for r in caplog.records)
    await unlisted.clock.advance(31)
    [fired] = unlisted.server.room_events  # the leftover, while the new process lives
    assert fired["content"]["online"] is False
    assert second.state is SwitchState.ARMED


async def test_the_record_is_the_owners_alone_and_drops_what_ended(
    account: Account, tmp_path: Path
) -> None:
    manager = account.manager(record_dir=tmp_path)
    switch = await status_switch(manager)
    directory = tmp_path / "nio-delayed-switches"
    [entry] = list(directory.glob("*.json"))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert switch.delay_id is not None
    assert switch.delay_id not in entry.name  # a credential on Synapse: named by a hash
    assert '"owner": "DEVICE"' in entry.read_text()
    # Gone behind the bot's back, it is found missing at the next start.
    account.server.cancel(switch.delay_id)
    await advancing(account.clock, manager.close(ExitPolicy.KEEP))
    await account.manager(record_dir=tmp_path).start()
    assert not list(directory.glob("*.json"))


async def test_a_re_armed_switch_leaves_one_entry_in_the_record(
    account: Account, tmp_path: Path
) -> None:
    manager = account.manager(record_dir=tmp_path)
    switch = await status_switch(manager)
    first = switch.delay_id
    assert first is not None
    account.server.cancel(first)  # lost: the next restart finds it gone, and arms a new one
    await account.clock.advance(30)
    assert switch.delay_id not in (None, first)
    [entry] = list((tmp_path / "nio-delayed-switches").glob("*.json"))
    assert str(switch.delay_id) in entry.read_text()
    await advancing(account.clock, manager.close(ExitPolicy.KEEP))


async def test_a_broken_record_file_is_skipped(account: Account, tmp_path: Path) -> None:
    directory = tmp_path / "nio-delayed-switches"
    directory.mkdir()
    (directory / "broken.json").write_text("{not json")
    switch = await status_switch(account.manager(record_dir=tmp_path))
    assert switch.state is SwitchState.ARMED
    assert len(list(directory.glob("*.json"))) == 2
