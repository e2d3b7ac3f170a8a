"""Sticky delayed messages (MSC4354): scheduled only where the server advertises them, sticky
once they fire, and kept sticky by a switch however often it is re-armed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import timedelta
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest

from nio_delayed import (
    DelayedEventError,
    DelayedEventsListResponse,
    DelayedEventsSupportResponse,
    Dialect,
    ErrorKind,
    InvalidInput,
    KeepAliveManager,
    RoomSendDelayedError,
    RoomSendDelayedResponse,
    SwitchEventKind,
    UnsupportedServerError,
)
from nio_delayed.devserver import DevServer
from nio_delayed.request_builders import schedule_request
from nio_delayed.testing import FakeClock, FakeHomeserver

from .conftest import CURRENT_SYNAPSE, Room, _start, fake_client, make_room

T = TypeVar("T")
ROOM = "!room:fake"
TEXT = {"msgtype": "m.text", "body": "left the call"}
STICKY_PARAM = "org.matrix.msc4354.sticky_duration_ms"


@pytest.fixture
async def sticky_server() -> AsyncIterator[FakeHomeserver]:
    async with FakeHomeserver(sticky=True) as server:
        yield server


async def advancing(clock: FakeClock, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` while time passes (a stop may wait for the request budget)."""
    task = asyncio.ensure_future(awaitable)
    while not task.done():
        await clock.advance(0.5)
    return task.result()


# -- the request ---------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", list(Dialect))
def test_every_dialect_carries_the_sticky_duration_as_a_query_parameter(dialect: Dialect) -> None:
    request = schedule_request(
        dialect, ROOM, "m.room.message", TEXT, 30_000, txn_id="t1", sticky_duration_ms=20_000
    )
    query = parse_qs(urlsplit(request.path).query)
    assert query[STICKY_PARAM] == ["20000"]
    if dialect is Dialect.LEGACY:
        assert query["org.matrix.msc4140.delay"] == ["30000"]
    else:
        assert request.body is not None
        assert request.body["content"] == TEXT


# -- the client call ------------------------------------------------------------------------


async def test_sticky_support_is_read_from_what_is_advertised(
    sticky_server: FakeHomeserver,
) -> None:
    client = await fake_client(sticky_server)
    support = await client.delayed_events_support()
    await client.close()
    assert isinstance(support, DelayedEventsSupportResponse)
    assert support.sticky
    assert "sticky" in str(support)


async def test_the_request_carries_the_sticky_duration_and_the_fired_event_is_sticky(
    sticky_server: FakeHomeserver,
) -> None:
    client = await fake_client(sticky_server)
    resp = await client.room_send_delayed(
        ROOM,
        "m.room.message",
        TEXT,
        timedelta(milliseconds=300),
        sticky_duration=timedelta(minutes=10),
    )
    assert isinstance(resp, RoomSendDelayedResponse), resp
    assert resp.sticky_duration_ms == 600_000
    [request] = sticky_server.requests_to("/delayed_event/")
    assert f"{STICKY_PARAM}=600000" in request.path
    sticky_server.fire(resp.delay_id)
    await client.close()
    [event] = sticky_server.room_events
    assert event["msc4354_sticky"] == {"duration_ms": 600_000}


async def test_a_message_without_sticky_duration_is_not_sticky(
    sticky_server: FakeHomeserver,
) -> None:
    client = await fake_client(sticky_server)
    resp = await client.room_send_delayed(ROOM, "m.room.message", TEXT, timedelta(milliseconds=300))
    assert isinstance(resp, RoomSendDelayedResponse), resp
    sticky_server.fire(resp.delay_id)
    await client.close()
    assert STICKY_PARAM not in sticky_server.requests_to("/delayed_event/")[0].path
    assert "msc4354_sticky" not in sticky_server.room_events[0]


async def test_a_server_without_sticky_events_is_sent_nothing(fake: FakeHomeserver) -> None:
    client = await fake_client(fake)
    resp = await client.room_send_delayed(
        ROOM, "m.room.message", TEXT, timedelta(minutes=1), sticky_duration=timedelta(seconds=30)
    )
    await client.close()
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.UNSUPPORTED
    assert "MSC4354" in resp.message
    assert fake.requests_to("/delayed_event/") == []


@pytest.mark.parametrize(
    "duration",
    [0, -1, timedelta(0), timedelta(hours=1, milliseconds=1), 3_600_001, 1.5, "30s", True],
)
async def test_a_sticky_duration_not_positive_or_above_an_hour_is_invalid(
    sticky_server: FakeHomeserver, duration: object
) -> None:
    client = await fake_client(sticky_server)
    resp = await client.room_send_delayed(
        ROOM,
        "m.room.message",
        TEXT,
        timedelta(minutes=1),
        sticky_duration=duration,  # type: ignore[arg-type]
    )
    await client.close()
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.INVALID
    assert sticky_server.requests == []


async def test_an_hour_is_the_longest_sticky_duration(sticky_server: FakeHomeserver) -> None:
    client = await fake_client(sticky_server)
    resp = await client.room_send_delayed(
        ROOM, "m.room.message", TEXT, timedelta(minutes=1), sticky_duration=timedelta(hours=1)
    )
    await client.close()
    assert isinstance(resp, RoomSendDelayedResponse), resp
    assert resp.sticky_duration_ms == 3_600_000


# -- switches -------------------------------------------------------------------------------


async def test_a_rearmed_switch_keeps_its_stickiness() -> None:
    clock = FakeClock()
    async with FakeHomeserver(clock=clock, sticky=True) as server:
        client = await fake_client(server)
        manager = KeepAliveManager(client, clock=clock, seed=1)
        events: list[SwitchEventKind] = []
        manager.on_event(lambda event: events.append(event.kind))
        switch = await manager.add(
            ROOM,
            "m.room.message",
            TEXT,
            delay=timedelta(seconds=30),
            sticky_duration=timedelta(seconds=20),
        )
        first = switch.delay_id
        assert first is not None
        server.forget(first)  # gone without a record: the switch arms a new event
        await clock.advance(11)
        assert SwitchEventKind.REARMED in events
        assert switch.delay_id not in (None, first)
        await advancing(clock, manager.close())  # on_exit: send it now
        await client.close()
    schedules = server.requests_to("/delayed_event/")
    assert len(schedules) == 2
    assert all(f"{STICKY_PARAM}=20000" in r.path for r in schedules)
    assert [e["msc4354_sticky"] for e in server.room_events] == [{"duration_ms": 20_000}]


async def test_a_sticky_switch_does_not_adopt_a_leftover_it_cannot_tell_is_sticky() -> None:
    clock = FakeClock()
    async with FakeHomeserver(clock=clock, sticky=True) as server:
        # A previous process left the same switch scheduled; no listing says if it is sticky.
        previous_client = await fake_client(server)
        previous = KeepAliveManager(previous_client, clock=clock, seed=1)
        old = await previous.add(
            ROOM, "m.room.message", TEXT, delay=timedelta(seconds=30), on_exit="keep"
        )
        leftover = old.delay_id
        await advancing(clock, previous.close())
        await previous_client.close()
        client = await fake_client(server)
        manager = KeepAliveManager(client, clock=clock, seed=2)
        switch = await advancing(
            clock,
            manager.add(
                ROOM,
                "m.room.message",
                TEXT,
                delay=timedelta(seconds=30),
                sticky_duration=timedelta(seconds=20),
            ),
        )
        assert switch.delay_id != leftover
        assert [d["delay_id"] for d in server.scheduled()] == [switch.delay_id]
        await advancing(clock, manager.close())  # on_exit: send it now
        await client.close()
    assert [e["msc4354_sticky"] for e in server.room_events] == [{"duration_ms": 20_000}]


async def test_a_sticky_switch_is_refused_by_a_server_without_sticky_events(
    fake: FakeHomeserver,
) -> None:
    client = await fake_client(fake)
    async with KeepAliveManager(client) as manager:
        with pytest.raises(UnsupportedServerError, match="MSC4354"):
            await manager.add(
                ROOM,
                "m.room.message",
                TEXT,
                delay=timedelta(seconds=30),
                sticky_duration=timedelta(seconds=20),
            )
    await client.close()
    assert fake.requests_to("/delayed_event/") == []


async def test_an_ordinary_sticky_message_is_sent_only_where_advertised(
    sticky_server: FakeHomeserver, fake: FakeHomeserver
) -> None:
    """``send_event_bounded(sticky_duration=)``: how a MatrixRTC membership is published."""
    client = await fake_client(sticky_server)
    event_id = await client.send_event_bounded(
        ROOM, "m.room.message", TEXT, sticky_duration=timedelta(minutes=5)
    )
    assert isinstance(event_id, str), event_id
    [event] = sticky_server.room_events
    assert event["msc4354_sticky"] == {"duration_ms": 300_000}
    await client.close()

    plain = await fake_client(fake)
    refused = await plain.send_event_bounded(
        ROOM, "m.room.message", TEXT, sticky_duration=timedelta(seconds=5)
    )
    assert isinstance(refused, DelayedEventError)
    assert refused.kind is ErrorKind.UNSUPPORTED
    state = await plain.send_event_bounded(
        ROOM, "org.example.s", {}, "", sticky_duration=timedelta(seconds=5)
    )
    assert isinstance(state, DelayedEventError)
    assert state.kind is ErrorKind.INVALID
    assert fake.room_events == []
    await plain.close()


async def test_a_sticky_state_switch_is_invalid(sticky_server: FakeHomeserver) -> None:
    client = await fake_client(sticky_server)
    with pytest.raises(InvalidInput, match="message switches"):
        async with client.dead_mans_switch(
            ROOM,
            "org.example.status",
            {},
            delay=timedelta(seconds=30),
            state_key="",
            sticky_duration=timedelta(seconds=20),
        ):
            pass
    await client.close()
    assert sticky_server.requests == []


# -- real Synapse ---------------------------------------------------------------------------


#: Merged with the experimental features the DevServer sets itself (sticky events included).
EXTRA_FEATURES = {"experimental_features": {"msc4140_max_delayed_events_per_user": 7}}


@pytest.fixture(scope="module")
def sticky_synapse() -> Iterator[DevServer]:
    server = _start(CURRENT_SYNAPSE, sticky_events=True, extra_config=EXTRA_FEATURES)
    yield server
    server.close()


@pytest.fixture
async def sticky_room(sticky_synapse: DevServer) -> AsyncIterator[Room]:
    async for value in make_room(sticky_synapse):
        yield value


@pytest.mark.synapse
async def test_a_sticky_delayed_message_fires_sticky_on_synapse(sticky_room: Room) -> None:
    support = await sticky_room.bot.delayed_events_support()
    assert isinstance(support, DelayedEventsSupportResponse), support
    assert support.sticky, support
    resp = await sticky_room.bot.room_send_delayed(
        sticky_room.room_id,
        "m.room.message",
        TEXT,
        timedelta(milliseconds=500),
        sticky_duration=timedelta(minutes=5),
    )
    assert isinstance(resp, RoomSendDelayedResponse), resp

    async def fired() -> bool:
        return any(m["content"] == TEXT for m in await sticky_room.messages())

    await sticky_room.wait_for(fired, timeout=15)
    [event] = [m for m in await sticky_room.messages() if m["content"] == TEXT]
    assert event["msc4354_sticky"] == {"duration_ms": 300_000}


@pytest.mark.synapse
def test_extra_config_merges_with_the_sections_the_devserver_sets(
    sticky_synapse: DevServer,
) -> None:
    config = json.loads((sticky_synapse.directory / "homeserver.json").read_text())
    assert config["experimental_features"] == {
        "msc4140_max_delayed_events_per_user": 7,
        "msc4354_enabled": True,
    }


@pytest.mark.synapse
async def test_a_synapse_without_sticky_events_is_sent_nothing(room: Room) -> None:
    """``room``: the shared Synapses of both generations, neither with MSC4354 on (1.142.1 has
    none at all)."""
    resp = await room.bot.room_send_delayed(
        room.room_id,
        "m.room.message",
        TEXT,
        timedelta(milliseconds=500),
        sticky_duration=timedelta(minutes=5),
    )
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.UNSUPPORTED
    listing = await room.bot.delayed_events()  # the bot's account is new: nothing was scheduled
    assert isinstance(listing, DelayedEventsListResponse), listing
    assert listing.delayed_events == []
