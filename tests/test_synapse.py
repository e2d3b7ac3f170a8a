"""The whole API against real Synapse, both generations (1.163.2 and 1.142.1).

Both speak the legacy dialect (A). Dialects B and C are tested against the fake homeserver.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import aiohttp
import pytest
from nio import MessageDirection, RoomGetStateEventResponse, RoomMessagesResponse

from nio_delayed import (
    DelayedEventsListResponse,
    DelayedEventsSupportResponse,
    DelayedEventStatus,
    Dialect,
    ErrorKind,
    GetDelayedEventResponse,
    Listing,
    RoomPutStateDelayedResponse,
    RoomSendDelayedError,
    RoomSendDelayedResponse,
    UpdateDelayedEventError,
    UpdateDelayedEventResponse,
)
from nio_delayed.devserver import DevServer

from .conftest import CURRENT_SYNAPSE, Room, login, make_room, unique

pytestmark = pytest.mark.synapse

TEXT = {"msgtype": "m.text", "body": "bot is offline"}


async def test_support_is_negotiated_as_legacy_dialect(room: Room) -> None:
    support = await room.bot.delayed_events_support()
    assert isinstance(support, DelayedEventsSupportResponse)
    assert support.supported
    assert support.dialect is Dialect.LEGACY
    if room.server.version == CURRENT_SYNAPSE:
        assert (support.max_delay_ms, support.max_scheduled) == (86_400_000, 100)
    else:  # 1.142 publishes no capability
        assert (support.max_delay_ms, support.max_scheduled) == (None, None)


async def test_message_fires_after_delay_and_second_user_sees_it(room: Room) -> None:
    scheduled_at = time.monotonic()
    resp = await room.bot.room_send_delayed(
        room.room_id, "m.room.message", TEXT, timedelta(seconds=1)
    )
    assert isinstance(resp, RoomSendDelayedResponse), resp
    assert await room.messages() == []

    async def arrived() -> bool:
        return bool(await room.messages())

    await room.wait_for(arrived, timeout=5)
    assert time.monotonic() - scheduled_at >= 1.0
    [event] = await room.messages()
    assert event["content"] == TEXT
    assert event["sender"] == room.bot.user_id


async def test_state_event_is_scheduled_and_fires(room: Room) -> None:
    resp = await room.bot.room_put_state_delayed(
        room.room_id, "org.example.status", {"online": False}, timedelta(seconds=1), "bot"
    )
    assert isinstance(resp, RoomPutStateDelayedResponse), resp
    assert resp.state_key == "bot"

    async def state_set() -> bool:
        got = await room.watcher.room_get_state_event(room.room_id, "org.example.status", "bot")
        return isinstance(got, RoomGetStateEventResponse) and got.content == {"online": False}

    await room.wait_for(state_set, timeout=5)


async def test_restarting_keeps_it_from_firing_until_restarts_stop(room: Room) -> None:
    resp = await room.bot.room_send_delayed(
        room.room_id, "m.room.message", TEXT, timedelta(seconds=1.5)
    )
    assert isinstance(resp, RoomSendDelayedResponse)
    for _ in range(8):  # 4 s of restarts, well past the 1.5 s delay
        await asyncio.sleep(0.5)
        restarted = await room.bot.restart_delayed_event(resp.delay_id)
        assert isinstance(restarted, UpdateDelayedEventResponse), restarted
    assert await room.messages() == []
    stopped = time.monotonic()

    async def arrived() -> bool:
        return bool(await room.messages())

    await room.wait_for(arrived, timeout=5)
    assert time.monotonic() - stopped >= 1.0


async def test_cancel_means_it_never_fires(room: Room) -> None:
    resp = await room.bot.room_send_delayed(
        room.room_id, "m.room.message", TEXT, timedelta(seconds=1)
    )
    assert isinstance(resp, RoomSendDelayedResponse)
    cancelled = await room.bot.cancel_delayed_event(resp.delay_id)
    assert isinstance(cancelled, UpdateDelayedEventResponse), cancelled
    await asyncio.sleep(2)
    assert await room.messages() == []
    # Synapse forgets a cancelled event: acting on it again is "not found".
    again = await room.bot.restart_delayed_event(resp.delay_id)
    assert isinstance(again, UpdateDelayedEventError)
    assert again.kind is ErrorKind.NOT_FOUND


async def test_send_now_sends_at_once(room: Room) -> None:
    resp = await room.bot.room_send_delayed(
        room.room_id, "m.room.message", TEXT, timedelta(minutes=1)
    )
    assert isinstance(resp, RoomSendDelayedResponse)
    sent = await room.bot.send_delayed_event_now(resp.delay_id)
    assert isinstance(sent, UpdateDelayedEventResponse), sent

    async def arrived() -> bool:
        return bool(await room.messages())

    assert await room.wait_for(arrived, timeout=5) < 5


async def test_lookup_and_list(room: Room) -> None:
    message = await room.bot.room_send_delayed(
        room.room_id, "m.room.message", TEXT, timedelta(minutes=1)
    )
    state = await room.bot.room_put_state_delayed(
        room.room_id, "org.example.status", {"online": False}, timedelta(minutes=1), "bot"
    )
    assert isinstance(message, RoomSendDelayedResponse)
    assert isinstance(state, RoomPutStateDelayedResponse)

    # 1.163 has the lookup endpoint; on 1.142 the client finds the event in the listing.
    found = await room.bot.get_delayed_event(message.delay_id)
    assert isinstance(found, GetDelayedEventResponse), found
    event = found.delayed_event
    assert (event.room_id, event.type, event.content) == (room.room_id, "m.room.message", TEXT)
    assert event.state_key is None
    assert event.delay_ms == 60_000
    assert event.status is DelayedEventStatus.SCHEDULED
    assert event.since_ts is not None
    assert abs(event.since_ts - time.time() * 1000) < 10_000
    assert event.due_ts == event.since_ts + 60_000

    listing = await room.bot.delayed_events()
    assert isinstance(listing, DelayedEventsListResponse), listing
    by_id = {e.delay_id: e for e in listing.scheduled}
    assert set(by_id) == {message.delay_id, state.delay_id}
    assert by_id[state.delay_id].state_key == "bot"
    assert by_id[state.delay_id].type == "org.example.status"
    for delay_id in by_id:
        await room.bot.cancel_delayed_event(delay_id)


async def test_released_synapse_keeps_its_msc4140_listing_and_filters_work_on_it(
    room: Room,
) -> None:
    """No released Synapse has MSC4486: the older listing serves, and the filters are applied
    by the client (Synapse lists scheduled events only, and takes no filter)."""
    support = await room.bot.delayed_events_support()
    assert isinstance(support, DelayedEventsSupportResponse)
    assert support.listing is Listing.MSC4140
    message = await room.bot.room_send_delayed(
        room.room_id, "m.room.message", TEXT, timedelta(minutes=1)
    )
    state = await room.bot.room_put_state_delayed(
        room.room_id, "org.example.status", {"online": False}, timedelta(minutes=1), "bot"
    )
    assert isinstance(message, RoomSendDelayedResponse)
    assert isinstance(state, RoomPutStateDelayedResponse)

    async def ids(**filters: object) -> set[str]:
        listing = await room.bot.delayed_events(**filters)  # type: ignore[arg-type]
        assert isinstance(listing, DelayedEventsListResponse), listing
        return {e.delay_id for e in listing.delayed_events}

    both = {message.delay_id, state.delay_id}
    assert await ids(status=DelayedEventStatus.SCHEDULED) == both
    assert await ids(room_id=room.room_id) == both
    assert await ids(event_type="org.example.status") == {state.delay_id}
    assert await ids(room_id="!elsewhere:localhost") == set()
    await room.bot.cancel_delayed_event(message.delay_id)
    assert await ids(status="cancelled") == set()  # Synapse keeps no finalised records
    assert await ids() == {state.delay_id}
    await room.bot.cancel_delayed_event(state.delay_id)


async def test_only_the_sender_sees_the_delay_id_of_a_fired_event(room: Room) -> None:
    resp = await room.bot.room_send_delayed(
        room.room_id, "m.room.message", TEXT, timedelta(milliseconds=300)
    )
    assert isinstance(resp, RoomSendDelayedResponse)

    async def arrived() -> bool:
        return bool(await room.messages())

    await room.wait_for(arrived, timeout=5)
    [seen_by_other] = await room.messages()
    mine = await room.bot.room_messages(room.room_id, direction=MessageDirection.back, limit=20)
    assert isinstance(mine, RoomMessagesResponse)
    [seen_by_sender] = [e.source for e in mine.chunk if e.source.get("type") == "m.room.message"]
    key = "org.matrix.msc4140.delay_id"
    assert key not in seen_by_other.get("unsigned", {})
    if room.server.version == CURRENT_SYNAPSE:
        assert seen_by_sender["unsigned"][key] == resp.delay_id
    else:  # 1.142 predates the field
        assert key not in seen_by_sender.get("unsigned", {})


async def test_management_without_a_token(room: Room) -> None:
    """The merged MSC authenticates management; Synapse 1.143+ still takes the delay_id alone
    (the client always sends its token)."""
    resp = await room.bot.room_send_delayed(
        room.room_id, "m.room.message", TEXT, timedelta(minutes=1)
    )
    assert isinstance(resp, RoomSendDelayedResponse)
    current = room.server.version == CURRENT_SYNAPSE
    base = f"{room.server.url}/_matrix/client/unstable/org.matrix.msc4140/delayed_events"
    url, body = (
        (f"{base}/{resp.delay_id}/restart", {})
        if current
        else (f"{base}/{resp.delay_id}", {"action": "restart"})
    )
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as answer:
        status = answer.status
    assert status == (200 if current else 401)
    await room.bot.cancel_delayed_event(resp.delay_id)


async def test_delay_above_maximum_is_refused(room: Room) -> None:
    too_long = timedelta(hours=25)
    first = await room.bot.room_send_delayed(room.room_id, "m.room.message", TEXT, too_long)
    assert isinstance(first, RoomSendDelayedError)
    assert first.kind is ErrorKind.DELAY_TOO_LARGE
    assert first.max_delay_ms == 86_400_000
    # The maximum is now known (from the capability, or learned from the first refusal):
    # the second attempt is refused without a request.
    support = await room.bot.delayed_events_support()
    assert isinstance(support, DelayedEventsSupportResponse)
    assert support.max_delay_ms == 86_400_000
    second = await room.bot.room_send_delayed(room.room_id, "m.room.message", TEXT, too_long)
    assert isinstance(second, RoomSendDelayedError)
    assert second.kind is ErrorKind.DELAY_TOO_LARGE
    assert second.http_status is None  # refused locally
    await asyncio.sleep(0.2)
    assert await room.messages() == []


async def test_unknown_delay_id_is_not_found(room: Room) -> None:
    for call in (
        room.bot.restart_delayed_event,
        room.bot.cancel_delayed_event,
        room.bot.send_delayed_event_now,
        room.bot.get_delayed_event,
    ):
        resp = await call("syd_doesnotexist")
        assert resp.kind is ErrorKind.NOT_FOUND, (call.__name__, resp)  # type: ignore[union-attr]


@pytest.mark.parametrize("delay", [0, -5, 1.5, "1000", None, timedelta(microseconds=1500)])
async def test_invalid_delay_is_refused_before_sending(room: Room, delay: object) -> None:
    resp = await room.bot.room_send_delayed(room.room_id, "m.room.message", TEXT, delay)  # type: ignore[arg-type]
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.INVALID
    assert "delay" in resp.message
    await asyncio.sleep(0.2)
    assert await room.messages() == []


async def test_server_with_feature_off_gets_nothing(
    synapse_without_delayed_events: DevServer,
) -> None:
    async for room in make_room(synapse_without_delayed_events):
        support = await room.bot.delayed_events_support()
        assert isinstance(support, DelayedEventsSupportResponse)
        assert not support.supported
        assert "delayed events" in support.reason
        resp = await room.bot.room_send_delayed(
            room.room_id, "m.room.message", TEXT, timedelta(seconds=1)
        )
        assert isinstance(resp, RoomSendDelayedError)
        assert resp.kind is ErrorKind.UNSUPPORTED
        state = await room.bot.room_put_state_delayed(
            room.room_id, "org.example.s", {}, timedelta(seconds=1)
        )
        assert state.kind is ErrorKind.UNSUPPORTED  # type: ignore[union-attr]
        await asyncio.sleep(1.5)
        assert await room.messages() == []


async def test_management_works_with_another_client_of_the_same_user(synapse: DevServer) -> None:
    """The body-form fallback on 1.142 is remembered per client; a fresh client finds it too."""
    user = synapse.register_user(unique("bot"))
    first, second = await login(synapse, user), await login(synapse, user)
    try:
        created = await first.room_create()
        resp = await first.room_send_delayed(
            created.room_id, "m.room.message", TEXT, timedelta(minutes=1)
        )  # type: ignore[union-attr]
        assert isinstance(resp, RoomSendDelayedResponse)
        for client in (first, second, first):
            restarted = await client.restart_delayed_event(resp.delay_id)
            assert isinstance(restarted, UpdateDelayedEventResponse), restarted
        cancelled = await second.cancel_delayed_event(resp.delay_id)
        assert isinstance(cancelled, UpdateDelayedEventResponse), cancelled
    finally:
        await first.close()
        await second.close()


async def test_retry_with_the_same_transaction_id_returns_the_same_delay_id(room: Room) -> None:
    """What makes retrying an unanswered message schedule safe."""
    first = await room.bot.room_send_delayed(
        room.room_id, "m.room.message", TEXT, timedelta(minutes=1), "t-1"
    )
    again = await room.bot.room_send_delayed(
        room.room_id, "m.room.message", TEXT, timedelta(minutes=1), "t-1"
    )
    assert isinstance(first, RoomSendDelayedResponse)
    assert isinstance(again, RoomSendDelayedResponse)
    assert first.delay_id == again.delay_id
    listing = await room.bot.delayed_events()
    assert isinstance(listing, DelayedEventsListResponse)
    assert [e.delay_id for e in listing.scheduled] == [first.delay_id]
    await room.bot.cancel_delayed_event(first.delay_id)
